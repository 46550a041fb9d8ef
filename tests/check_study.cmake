# Smoke test of the study driver: the micro preset writes every report file, JSON parses,
# a rerun reuses the finished runs, and bad input is a clear error.
file(REMOVE_RECURSE "${WORK_DIR}")
# One thread everywhere: the sharded runs below (one core per process or MPI rank) are compared
# bit for bit with this one-process run, and OpenMP reductions round differently with another
# thread count.
set(ENV{OMP_NUM_THREADS} 1)
# The dense teacher also serves as an "accuracy-matched" dense teacher: the matched claim-3
# comparison runs (a real study uses earlier checkpoints of another teacher run).
execute_process(COMMAND ${DRIVER} --preset micro --checkpoint ${CHECKPOINT} --halting-teachers ${HALTING_TEACHER}
                  --dense-teachers ${CHECKPOINT} --out ${WORK_DIR} --quiet
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "micro study failed (${rc}):\n${out}\n${err}")
endif()
foreach(f report.md config.json summary.json profile.json profile.csv sweep.json sweep.csv groups.json groups.csv
          runs/kinds.json sweep_stats.json
          latency.dat params.dat runs/efficiency.json runs/teacher.json halting.csv halting.json gap.dat gap_acc.dat
          runs/halting-dense-vit-fmnist-min_gru-s1.json)
  if(NOT EXISTS "${WORK_DIR}/${f}")
    message(FATAL_ERROR "micro study did not write ${f}")
  endif()
endforeach()
# The dense teacher with halting switched off keeps every token and the dense accuracy.
file(READ "${WORK_DIR}/runs/halting-teacher-dense-no-halting.json" off)
file(READ "${WORK_DIR}/runs/teacher.json" dense)
string(JSON off_keep GET "${off}" mean_keep)
string(JSON off_acc GET "${off}" accuracy)
string(JSON dense_acc GET "${dense}" accuracy)
if(NOT off_keep EQUAL 1 OR NOT off_acc EQUAL dense_acc)
  message(FATAL_ERROR "halting switched off is not the dense teacher: keep ${off_keep}, accuracy ${off_acc} vs ${dense_acc}")
endif()
file(READ "${WORK_DIR}/report.md" report)
foreach(needle "### Against dense teachers of the same accuracy" "Verdict (matched): " "top-1 agreement")
  string(FIND "${report}" "${needle}" pos)
  if(pos EQUAL -1)
    message(FATAL_ERROR "the micro report lacks '${needle}'")
  endif()
endforeach()
foreach(f config.json summary.json profile.json sweep.json groups.json halting.json runs/efficiency.json)
  file(READ "${WORK_DIR}/${f}" text)
  string(JSON kind ERROR_VARIABLE jerr TYPE "${text}")
  if(jerr)
    message(FATAL_ERROR "${f} is not valid JSON: ${jerr}")
  endif()
endforeach()
file(READ "${WORK_DIR}/summary.json" summary)
string(JSON claim2 GET "${summary}" claims 2)
file(READ "${WORK_DIR}/report.md" report)
string(FIND "${report}" "Verdict" pos)
if(pos EQUAL -1)
  message(FATAL_ERROR "report.md has no verdicts")
endif()
find_program(GNUPLOT gnuplot)
if(GNUPLOT)
  foreach(f s_ent_by_layer.png sweep.png groups.png gap_vs_sparsity.png latency.png params.png)
    if(NOT EXISTS "${WORK_DIR}/${f}")
      message(FATAL_ERROR "gnuplot is installed but ${f} is missing")
    endif()
  endforeach()
endif()
# A rerun reuses every finished run (no stage is redone): it must not touch runs/*.json.
file(TIMESTAMP "${WORK_DIR}/runs/group-min_gru-sparsest-2.json" before "%s")
execute_process(COMMAND ${DRIVER} --preset micro --checkpoint ${CHECKPOINT} --halting-teachers ${HALTING_TEACHER} --out ${WORK_DIR} --quiet
                RESULT_VARIABLE rc ERROR_VARIABLE err)
file(TIMESTAMP "${WORK_DIR}/runs/group-min_gru-sparsest-2.json" after "%s")
if(NOT rc EQUAL 0 OR NOT before STREQUAL after)
  message(FATAL_ERROR "the rerun did not reuse finished runs (rc ${rc}):\n${err}")
endif()
# Another configuration in the same folder is refused; an unknown mixer is named.
execute_process(COMMAND ${DRIVER} --preset micro --checkpoint ${CHECKPOINT} --halting-teachers ${HALTING_TEACHER}
                  --out ${WORK_DIR} --stage1-steps 7 --quiet
                RESULT_VARIABLE rc ERROR_VARIABLE err)
string(FIND "${err}" "another configuration" pos)
if(rc EQUAL 0 OR pos EQUAL -1)
  message(FATAL_ERROR "a changed configuration was not refused:\n${err}")
endif()
# Issue 19. The refusal names the key that differs.
string(FIND "${err}" "stage1_steps: 3 in the folder, 7 now" pos)
if(pos EQUAL -1)
  message(FATAL_ERROR "the refusal did not name the changed key:\n${err}")
endif()
execute_process(COMMAND ${DRIVER} --preset micro --mixers mamba --out ${WORK_DIR}_bad --quiet
                RESULT_VARIABLE rc ERROR_VARIABLE err)
string(FIND "${err}" "unknown mixer 'mamba'" pos)
if(rc EQUAL 0 OR pos EQUAL -1)
  message(FATAL_ERROR "an unknown mixer was not named:\n${err}")
endif()
# A typo in an input fails before the folder is touched; the corrected rerun is not refused.
file(TIMESTAMP "${WORK_DIR}/config.json" cfg_before "%s")
execute_process(COMMAND ${DRIVER} --preset micro --checkpoint ${CHECKPOINT} --halting-teachers models/typo.safetensors
                  --out ${WORK_DIR} --quiet RESULT_VARIABLE rc ERROR_VARIABLE err)
string(FIND "${err}" "halting_teachers: models/typo.safetensors not found" pos)
file(TIMESTAMP "${WORK_DIR}/config.json" cfg_after "%s")
if(rc EQUAL 0 OR pos EQUAL -1 OR NOT cfg_before STREQUAL cfg_after)
  message(FATAL_ERROR "a typo'd halting teacher was not refused before the folder was touched:\n${err}")
endif()
# A run file that parses but has the wrong shape is redone, not a bare type error.
file(WRITE "${WORK_DIR}/runs/group-min_gru-sparsest-2.json" "{\"mixer\": 1}")
execute_process(COMMAND ${DRIVER} --preset micro --checkpoint ${CHECKPOINT} --halting-teachers ${HALTING_TEACHER} --out ${WORK_DIR}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
file(READ "${WORK_DIR}/runs/group-min_gru-sparsest-2.json" redone)
string(FIND "${err}" "group-min_gru-sparsest-2.json lacks" pos)
string(FIND "${redone}" "stage2_accuracy" has)
if(NOT rc EQUAL 0 OR pos EQUAL -1 OR has EQUAL -1)
  message(FATAL_ERROR "a malformed run file was not redone (rc ${rc}):\n${err}")
endif()
# Verdicts need evidence: with no mixers, claims 2-4 are 'not tested'.
execute_process(COMMAND ${DRIVER} --preset micro --checkpoint ${CHECKPOINT} --mixers "" --halting-mixers ""
                  --halting-teachers ${HALTING_TEACHER} --out ${WORK_DIR}_none --quiet RESULT_VARIABLE rc ERROR_VARIABLE err)
file(READ "${WORK_DIR}_none/report.md" none_report)
string(REGEX MATCHALL "Verdict: not tested" untested "${none_report}")
list(LENGTH untested n_untested)
if(NOT rc EQUAL 0 OR n_untested LESS 3)
  message(FATAL_ERROR "claims over zero cases were not reported as 'not tested' (${n_untested} found, rc ${rc}):\n${err}")
endif()
# Issue 15: two shards side by side on one folder, then the unsharded pass, give the same runs
# (bit for bit) and the same verdicts as one process; every cell has its two seeds. Built with
# MPI (issue 17), the two shards are two MPI ranks of one job (rank 0 then runs the unsharded
# pass): the orchestration users run with mpirun; otherwise two processes with --shard, as
# scripts/run_study.sh runs them. Both share the Study's shard code.
file(REMOVE_RECURSE "${WORK_DIR}_sh")
if(MPIEXEC)
  set(ENV{OMPI_ALLOW_RUN_AS_ROOT} 1)
  set(ENV{OMPI_ALLOW_RUN_AS_ROOT_CONFIRM} 1)
  execute_process(COMMAND ${MPIEXEC} -n 2 --oversubscribe ${DRIVER} --preset micro --checkpoint ${CHECKPOINT}
                    --halting-teachers ${HALTING_TEACHER} --out ${WORK_DIR}_sh --quiet
                  RESULT_VARIABLE rc ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "the study on 2 MPI ranks failed (${rc}):\n${err}")
  endif()
  # A rank that fails fails the job, naming itself, and leaves the finished runs in place.
  execute_process(COMMAND ${MPIEXEC} -n 2 --oversubscribe ${DRIVER} --preset micro --checkpoint ${CHECKPOINT}
                    --halting-teachers ${HALTING_TEACHER} --out ${WORK_DIR}_sh --shard 0/2 --quiet
                  RESULT_VARIABLE rc ERROR_VARIABLE err)
  string(FIND "${err}" "--shard and --report-only: not under mpirun" pos)
  if(rc EQUAL 0 OR pos EQUAL -1)
    message(FATAL_ERROR "--shard under mpirun was not refused:\n${err}")
  endif()
else()
  execute_process(COMMAND ${DRIVER} --preset micro --checkpoint ${CHECKPOINT} --halting-teachers ${HALTING_TEACHER}
                    --out ${WORK_DIR}_sh --shard 0/2 --quiet
                  COMMAND ${DRIVER} --preset micro --checkpoint ${CHECKPOINT} --halting-teachers ${HALTING_TEACHER}
                    --out ${WORK_DIR}_sh --shard 1/2 --quiet
                  RESULTS_VARIABLE rcs ERROR_VARIABLE err)
  if(NOT rcs STREQUAL "0;0")
    message(FATAL_ERROR "sharded study failed (${rcs}):\n${err}")
  endif()
  if(EXISTS "${WORK_DIR}_sh/report.md")
    message(FATAL_ERROR "a shard wrote the report")
  endif()
  execute_process(COMMAND ${DRIVER} --preset micro --checkpoint ${CHECKPOINT} --halting-teachers ${HALTING_TEACHER}
                    --out ${WORK_DIR}_sh --quiet RESULT_VARIABLE rc ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "the pass after the shards failed (${rc}):\n${err}")
  endif()
endif()
foreach(run group-min_gru-sparsest-2-s1 group-min_gru-densest-4 sweep-min_gru-layer3)
  file(READ "${WORK_DIR}/runs/${run}.json" one)
  file(READ "${WORK_DIR}_sh/runs/${run}.json" two)
  string(JSON d1 GET "${one}" drop_stage2)
  string(JSON d2 GET "${two}" drop_stage2)
  string(JSON n1 GET "${one}" mean_nmse_free)
  string(JSON n2 GET "${two}" mean_nmse_free)
  if(NOT d1 STREQUAL d2 OR NOT n1 STREQUAL n2)
    message(FATAL_ERROR "${run}: one process gave drop ${d1}, nMSE ${n1}; two shards ${d2}, ${n2}")
  endif()
endforeach()
file(READ "${WORK_DIR}_sh/summary.json" summary_sh)
string(JSON claim2_sh GET "${summary_sh}" claims 2)
string(JSON cell GET "${summary_sh}" group_cells 0)
string(JSON n_sparsest LENGTH "${cell}" sparsest)
if(NOT claim2_sh STREQUAL claim2 OR NOT n_sparsest EQUAL 2)
  message(FATAL_ERROR "sharded verdict '${claim2_sh}' vs '${claim2}', ${n_sparsest} seeds in the first cell (expected 2)")
endif()
execute_process(COMMAND ${DRIVER} --preset micro --shard 2/2 --out ${WORK_DIR}_c RESULT_VARIABLE rc ERROR_VARIABLE err)
string(FIND "${err}" "--shard: expected K/N with 0 <= K < N" pos)
if(rc EQUAL 0 OR pos EQUAL -1)
  message(FATAL_ERROR "a bad --shard was not refused:\n${err}")
endif()
# Bad --config files are named.
execute_process(COMMAND ${DRIVER} --config ${WORK_DIR}/absent.json --out ${WORK_DIR}_c RESULT_VARIABLE rc ERROR_VARIABLE err)
string(FIND "${err}" "--config: file not found" pos)
if(rc EQUAL 0 OR pos EQUAL -1)
  message(FATAL_ERROR "a missing --config was not named:\n${err}")
endif()
execute_process(COMMAND ${DRIVER} --config ${WORK_DIR} --out ${WORK_DIR}_c RESULT_VARIABLE rc ERROR_VARIABLE err)
string(FIND "${err}" "expected a JSON file" pos)
if(rc EQUAL 0 OR pos EQUAL -1)
  message(FATAL_ERROR "a directory as --config was not named:\n${err}")
endif()
file(WRITE "${WORK_DIR}/bad_groups.json" "{\"group_sizes\": [\"a\"]}")
execute_process(COMMAND ${DRIVER} --config ${WORK_DIR}/bad_groups.json --out ${WORK_DIR}_c RESULT_VARIABLE rc ERROR_VARIABLE err)
string(FIND "${err}" "bad_groups.json: key 'group_sizes' expects an array of whole numbers" pos)
if(rc EQUAL 0 OR pos EQUAL -1)
  message(FATAL_ERROR "a bad group_sizes entry was not named:\n${err}")
endif()
file(WRITE "${WORK_DIR}/bad_batch.json" "{\"batch\": 2.9}")
execute_process(COMMAND ${DRIVER} --config ${WORK_DIR}/bad_batch.json --out ${WORK_DIR}_c RESULT_VARIABLE rc ERROR_VARIABLE err)
string(FIND "${err}" "bad_batch.json: key 'batch' expects a whole number, found 2.9" pos)
if(rc EQUAL 0 OR pos EQUAL -1)
  message(FATAL_ERROR "a fractional batch was not refused:\n${err}")
endif()
file(REMOVE_RECURSE "${WORK_DIR}" "${WORK_DIR}_none" "${WORK_DIR}_c" "${WORK_DIR}_sh")
message(STATUS "micro study: every file written and parsed (claim 2 verdict: ${claim2}); rerun reused runs")
