# Compiles SOURCE (syntax only) and passes when compilation FAILS with EXPECT in the output.
execute_process(
  COMMAND ${CXX} -std=c++20 -fsyntax-only ${INCLUDES} ${SOURCE}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0)
  message(FATAL_ERROR "${SOURCE} compiled, but it must not")
endif()
string(FIND "${out}${err}" "${EXPECT}" pos)
if(pos EQUAL -1)
  message(FATAL_ERROR "${SOURCE} failed to compile, but without the promised message '${EXPECT}':\n${err}")
endif()
message(STATUS "${SOURCE}: fails to compile with '${EXPECT}', as promised")
