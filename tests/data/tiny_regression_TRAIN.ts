# A tiny UEA/UCR-format regression file for tests: 2 channels, variable lengths, numeric targets.
@problemName tiny_regression
@timeStamps false
@missing false
@univariate false
@dimensions 2
@equalLength false
@targetLabel true
@data
1.0,2.0,3.0:0.5,0.5,0.5:1.5
2.0,3.0,4.0,5.0:0.1,0.2,0.3,0.4:2.5
0.0,1.0:1.0,1.0:0.5
3.0,3.0,3.0,3.0,3.0:0.0,0.0,0.0,0.0,0.0:3.0
1.5,2.5,3.5:0.2,0.2,0.2:2.0
4.0,4.5,5.0,5.5,6.0,6.5:0.3,0.3,0.3,0.3,0.3,0.3:4.5
0.5,0.5:0.9,0.8:1.0
2.0,2.0,2.0,2.0:0.4,0.5,0.6,0.7:2.2
1.0,1.0,1.0:0.0,0.1,0.2:1.2
5.0,5.0,5.0,5.0,5.0,5.0,5.0:0.5,0.5,0.5,0.5,0.5,0.5,0.5:5.0
