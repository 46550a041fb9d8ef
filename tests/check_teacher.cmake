# Evaluates the shipped teacher on the full Fashion-MNIST test set and requires the accuracy
# that models/README.md promises.
execute_process(COMMAND ${EVALUATE} --checkpoint ${CHECKPOINT}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "evaluate failed (${rc}):\n${out}\n${err}")
endif()
string(REGEX MATCH "accuracy: ([0-9.]+)" _ "${out}")
set(acc "${CMAKE_MATCH_1}")
if(acc STREQUAL "")
  message(FATAL_ERROR "evaluate printed no accuracy line:\n${out}")
endif()
if(acc LESS ${MIN_ACCURACY})
  message(FATAL_ERROR "shipped teacher accuracy ${acc} < ${MIN_ACCURACY}")
endif()
message(STATUS "shipped teacher accuracy ${acc} (>= ${MIN_ACCURACY})")
