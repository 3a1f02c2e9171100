@problemName Bad
@equalLength true
@seriesLength 3
@classLabel true up down
@data
1,2,3:4,5,6:up
3,2,1,0:6,5,4,3:down
