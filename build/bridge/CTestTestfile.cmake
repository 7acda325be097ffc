# CMake generated Testfile for 
# Source directory: /work/main/bridge
# Build directory: /work/main/build/bridge
# 
# This file includes the relevant testing commands required for 
# testing this directory and lists subdirectories to be tested as well.
