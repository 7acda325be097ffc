
# Consider dependencies only in project.
set(CMAKE_DEPENDS_IN_PROJECT_ONLY OFF)

# The set of languages for which implicit dependencies are needed:
set(CMAKE_DEPENDS_LANGUAGES
  )

# The set of dependency files which are needed:
set(CMAKE_DEPENDS_DEPENDENCY_FILES
  "/work/main/common/buf.c" "common/CMakeFiles/cloudpush_common.dir/buf.c.o" "gcc" "common/CMakeFiles/cloudpush_common.dir/buf.c.o.d"
  "/work/main/common/bus.c" "common/CMakeFiles/cloudpush_common.dir/bus.c.o" "gcc" "common/CMakeFiles/cloudpush_common.dir/bus.c.o.d"
  "/work/main/common/config.c" "common/CMakeFiles/cloudpush_common.dir/config.c.o" "gcc" "common/CMakeFiles/cloudpush_common.dir/config.c.o.d"
  "/work/main/common/envelope.c" "common/CMakeFiles/cloudpush_common.dir/envelope.c.o" "gcc" "common/CMakeFiles/cloudpush_common.dir/envelope.c.o.d"
  "/work/main/common/ids.c" "common/CMakeFiles/cloudpush_common.dir/ids.c.o" "gcc" "common/CMakeFiles/cloudpush_common.dir/ids.c.o.d"
  "/work/main/common/log.c" "common/CMakeFiles/cloudpush_common.dir/log.c.o" "gcc" "common/CMakeFiles/cloudpush_common.dir/log.c.o.d"
  "/work/main/common/metrics.c" "common/CMakeFiles/cloudpush_common.dir/metrics.c.o" "gcc" "common/CMakeFiles/cloudpush_common.dir/metrics.c.o.d"
  "/work/main/common/topics.c" "common/CMakeFiles/cloudpush_common.dir/topics.c.o" "gcc" "common/CMakeFiles/cloudpush_common.dir/topics.c.o.d"
  )

# Targets to which this target links.
set(CMAKE_TARGET_LINKED_INFO_FILES
  )

# Fortran module output directory.
set(CMAKE_Fortran_TARGET_MODULE_DIR "")
