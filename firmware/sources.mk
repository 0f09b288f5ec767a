# The source lists make shares with the Zephyr build (sources.cmake reads them the same way):
# each portable directory (core/, app/, runtime/common/) has a sources.txt, one path per line
# relative to that directory, '#' starting a comment line.
#   $(call wb_sources,<dir>)   ->   <dir>/<path> for every path of <dir>/sources.txt
wb_hash := \#
wb_sources = $(addprefix $(1)/,$(shell sed -e '/^[[:space:]]*$(wb_hash)/d' $(call wb_list,$(1))))
wb_list = $(or $(wildcard $(1)/sources.txt),$(error $(1)/sources.txt: no such file))
