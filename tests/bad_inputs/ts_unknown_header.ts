@problemName Bad
@clasLabel true up down
@data
1,2,3:up
