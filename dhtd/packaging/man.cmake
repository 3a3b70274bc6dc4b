# man.cmake: makes PROGRAM's man page from its --help and --version with
# help2man, plus the sections of INCLUDE (a help2man include file), and
# gzips it to OUTPUT. A program whose --help lists "Commands:" also gets a
# COMMANDS section with each command's own help (PROGRAM help COMMAND), so
# that the page says everything --help can.
#
#   cmake -DHELP2MAN=... -DPROGRAM=... -DINCLUDE=... -DOUTPUT=x.1.gz -P man.cmake

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rv OUTPUT_VARIABLE out
                  ERROR_VARIABLE err)
  if(NOT rv EQUAL 0)
    message(FATAL_ERROR "man.cmake: `${ARGN}` failed (${rv}): ${err}")
  endif()
  set(out "${out}" PARENT_SCOPE)
endfunction()

string(REGEX REPLACE "\\.gz$" "" page "${OUTPUT}")
get_filename_component(name "${PROGRAM}" NAME)
set(includes --include "${INCLUDE}")

run("${PROGRAM}" --help)
string(REGEX MATCH "\nCommands:\n(  [^\n]*\n)+" listing "${out}")
if(listing)
  set(section "[COMMANDS]\n")
  string(REGEX MATCHALL "\n  [a-z]+" words "${listing}")
  foreach(word IN LISTS words)
    string(STRIP "${word}" cmd)
    if(cmd STREQUAL "help")
      continue() # the page itself
    endif()
    run("${PROGRAM}" help "${cmd}")
    # Kept as printed (no fill); roff's escape character and a leading dot
    # or quote must not be read as roff.
    string(REPLACE "\\" "\\e" out "${out}")
    string(REGEX REPLACE "(^|\n)([.'])" "\\1\\\\&\\2" out "${out}")
    string(APPEND section ".SS \"${name} ${cmd}\"\n.nf\n${out}.fi\n")
  endforeach()
  file(WRITE "${page}.commands.h2m" "${section}")
  list(APPEND includes --include "${page}.commands.h2m")
endif()

run("${HELP2MAN}" --no-info --section=1 ${includes} --output=${page} "${PROGRAM}")
run(gzip -9nf "${page}")
