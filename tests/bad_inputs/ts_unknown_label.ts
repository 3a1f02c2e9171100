@problemName Bad
@dimensions 2
@equalLength false
@classLabel true up down
@data
1,2,3:4,5,6:up
3,2,1:6,5,4:sideways
