@problemName Bad
@classLabel true up down
1,2,3:4,5,6:up
