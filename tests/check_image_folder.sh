#!/usr/bin/env bash
# The drivers on an image folder (issue 17): Fashion-MNIST exported as PNGs evaluates exactly as
# the IDX files do (lossless, the checkpoint's normalisation, --crop-pct 1 = no resampling);
# train_teacher trains on a folder (in memory, and streamed: killed and resumed, equal to an
# uninterrupted run) and evaluate reads its checkpoint; a corrupt file stops
# evaluation naming it, or is skipped and reported with --on-corrupt skip.
# Usage: check_image_folder.sh EXPORT_IMAGES TRAIN_TEACHER EVALUATE CHECKPOINT WORK_DIR
set -u
export_images=$1 train=$2 evaluate=$3 ckpt=$4 work=$5
export OMP_NUM_THREADS=1
fail() { echo "check_image_folder: $*"; exit 1; }
rm -rf "$work" && mkdir -p "$work"
folder="$work/fmnist"
"$export_images" --out "$folder" --train-limit 512 --test-limit 500 --format png || fail "export_images failed"
[ "$(find "$folder/test" -name '*.png' | wc -l)" = 500 ] || fail "expected 500 test PNGs"

acc_idx=$("$evaluate" --checkpoint "$ckpt" --limit 500 | awk '/^accuracy:/ {print $2}')
acc_dir=$("$evaluate" --checkpoint "$ckpt" --image-folder "$folder" --crop-pct 1 | awk '/^accuracy:/ {print $2}')
acc_str=$("$evaluate" --checkpoint "$ckpt" --image-folder "$folder" --crop-pct 1 --stream --workers 2 | awk '/^accuracy:/ {print $2}')
echo "shipped teacher: IDX $acc_idx, PNG folder $acc_dir, streamed $acc_str (500 test images)"
[ -n "$acc_idx" ] && [ "$acc_idx" = "$acc_dir" ] && [ "$acc_idx" = "$acc_str" ] ||
  fail "the folder's accuracy ($acc_dir, streamed $acc_str) differs from the IDX files' ($acc_idx)"

"$train" --image-folder "$folder" --image-size 28 --channels 1 --crop-pct 1 --normalize fashion-mnist \
  --epochs 1 --width 16 --depth 1 --heads 2 --batch 64 --out "$work/t.safetensors" --quiet >"$work/train.log" 2>&1 ||
  { cat "$work/train.log"; fail "train_teacher on the folder failed"; }
"$evaluate" --checkpoint "$work/t.safetensors" --image-folder "$folder" --crop-pct 1 | grep -q "^accuracy: " ||
  fail "evaluate could not read the folder-trained checkpoint"

# --stream: batches decoded by worker threads as training goes; killed after its first epoch and
# resumed, it must end byte-identical to an uninterrupted streamed run (the stream seeks).
stream_args=(--image-folder "$folder" --image-size 28 --channels 1 --crop-pct 1 --normalize fashion-mnist --stream
  --crop-scale-min 0.5 --epochs 3 --width 16 --depth 1 --heads 2 --batch 64 --seed 4 --workers 2 --quiet)
"$train" "${stream_args[@]}" --out "$work/s_whole.safetensors" >"$work/stream.log" 2>&1 ||
  { cat "$work/stream.log"; fail "train_teacher --stream failed"; }
"$train" "${stream_args[@]}" --resume --out "$work/s_resumed.safetensors" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 600); do [ -f "$work/s_resumed.state.safetensors" ] && break; sleep 0.05; done
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
"$train" "${stream_args[@]}" --resume --out "$work/s_resumed.safetensors" >"$work/resume.log" 2>&1 ||
  { cat "$work/resume.log"; fail "train_teacher --stream --resume failed"; }
cmp -s "$work/s_whole.safetensors" "$work/s_resumed.safetensors" ||
  fail "the resumed streamed run differs from the uninterrupted one ($(grep -c resuming "$work/resume.log") resume)"
echo "stream: trained, killed after epoch 1 ($(grep -c resuming "$work/resume.log") resume), equal to the uninterrupted run"

printf 'not an image' >"$folder/test/3-dress/zz_corrupt.png"
out=$("$evaluate" --checkpoint "$ckpt" --image-folder "$folder" --crop-pct 1 2>&1) && fail "a corrupt file did not stop evaluation"
grep -q "zz_corrupt.png" <<<"$out" || { echo "$out"; fail "the error does not name the corrupt file"; }
out=$("$evaluate" --checkpoint "$ckpt" --image-folder "$folder" --crop-pct 1 --on-corrupt skip 2>&1) ||
  { echo "$out"; fail "--on-corrupt skip did not skip"; }
grep -q "skipped.*zz_corrupt.png" <<<"$out" && grep -q "^accuracy: $acc_idx" <<<"$out" ||
  { echo "$out"; fail "the skipped file was not reported, or the accuracy changed"; }
echo "image folder: exact on PNGs, trains, corrupt file named and skipped on request"
rm -rf "$work"
