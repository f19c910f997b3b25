# Fails unless README.md contains each example file verbatim: the README's code is the code the tests compile.
# Usage: cmake -DREADME=path -DEXAMPLES="a;b" -P check_readme.cmake
file(READ "${README}" readme)
foreach(example IN LISTS EXAMPLES)
  file(READ "${example}" code)
  string(FIND "${readme}" "${code}" position)
  if(position EQUAL -1)
    message(FATAL_ERROR "README.md does not contain ${example} verbatim; copy the file into the README's code block")
  endif()
endforeach()
message(STATUS "README examples are in sync")
