file(REMOVE_RECURSE
  "libcloudpush_common.a"
)
