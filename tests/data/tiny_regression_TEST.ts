# Test split of tiny_regression_TRAIN.ts.
@problemName tiny_regression
@timeStamps false
@missing false
@univariate false
@dimensions 2
@equalLength false
@targetLabel true
@data
1.0,2.0:0.5,0.5:1.4
3.0,3.0,3.0,3.0,3.0,3.0,3.0,3.0:0.0,0.1,0.2,0.3,0.4,0.5,0.6,0.7:3.3
2.0,2.5,3.0:0.2,0.2,0.2:2.1
0.5,1.0,1.5,2.0,2.5:0.3,0.3,0.3,0.3,0.3:1.8
