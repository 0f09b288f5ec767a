# The source lists the Zephyr build shares with make (sources.mk reads them the same way):
# each portable directory (core/, app/, runtime/common/) has a sources.txt, one path per line
# relative to that directory, '#' starting a comment line.
#   wasmbed_sources(<var> <dir>)   sets <var> to <dir>/<path> for every path of <dir>/sources.txt
include_guard(GLOBAL)

function(wasmbed_sources var dir)
  file(STRINGS ${dir}/sources.txt lines REGEX "^[ \t]*[^# \t]")
  set(paths)
  foreach(line IN LISTS lines)
    string(STRIP "${line}" line)
    list(APPEND paths ${dir}/${line})
  endforeach()
  # an edited list re-runs CMake, as an edited Makefile re-reads it
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${dir}/sources.txt)
  set(${var} ${paths} PARENT_SCOPE)
endfunction()
