file(REMOVE_RECURSE
  "CMakeFiles/cloudpush_common.dir/buf.c.o"
  "CMakeFiles/cloudpush_common.dir/buf.c.o.d"
  "CMakeFiles/cloudpush_common.dir/bus.c.o"
  "CMakeFiles/cloudpush_common.dir/bus.c.o.d"
  "CMakeFiles/cloudpush_common.dir/config.c.o"
  "CMakeFiles/cloudpush_common.dir/config.c.o.d"
  "CMakeFiles/cloudpush_common.dir/envelope.c.o"
  "CMakeFiles/cloudpush_common.dir/envelope.c.o.d"
  "CMakeFiles/cloudpush_common.dir/ids.c.o"
  "CMakeFiles/cloudpush_common.dir/ids.c.o.d"
  "CMakeFiles/cloudpush_common.dir/log.c.o"
  "CMakeFiles/cloudpush_common.dir/log.c.o.d"
  "CMakeFiles/cloudpush_common.dir/metrics.c.o"
  "CMakeFiles/cloudpush_common.dir/metrics.c.o.d"
  "CMakeFiles/cloudpush_common.dir/topics.c.o"
  "CMakeFiles/cloudpush_common.dir/topics.c.o.d"
  "libcloudpush_common.a"
  "libcloudpush_common.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/cloudpush_common.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
