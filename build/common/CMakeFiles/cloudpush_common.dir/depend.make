# Empty dependencies file for cloudpush_common.
# This may be replaced when dependencies are built.
