#!/bin/sh
# test_reference_cli.sh: the reference trainer's command line and names (docs/reference-keys.md),
# suggestions (did-you-mean across sections and for commands, help anywhere, a flag given a value),
# the 1.6B model file's derived FFN size, the warmup hint, and what a resume says (global batch,
# schedule, another model's run) and train.log's record of a signal stop. Needs $LCM_BIN.
set -u
LCM=${LCM_BIN:-build/lcm}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lcm-ref-XXXXXX")
trap 'rm -rf "$tmp"' EXIT

check() {
  name=$1
  shift
  if "$@"; then echo "PASS $name"; else echo "FAIL $name"; fi
}
# run EXPECTED_STATUS CMD...: stdout+stderr in $tmp/out, true when the status is the one expected
run() {
  want=$1
  shift
  "$@" >"$tmp/out" 2>&1
  got=$?
  [ "$got" -eq "$want" ] || { echo "status $got, wanted $want: $*" >&2; cat "$tmp/out" >&2; return 1; }
}
has() { grep -q -- "$1" "$tmp/out" || { echo "no '$1' in:" >&2; cat "$tmp/out" >&2; return 1; }; }
one_line() { [ "$(wc -l <"$tmp/out")" -eq 1 ] || { cat "$tmp/out" >&2; return 1; }; }

# ---- 1. the reference's command line -------------------------------------------------------------
ref="launcher=standalone +pretrain=mse ++trainer.output_dir=checkpoints/mse_lcm ++trainer.experiment_name=training_mse_lcm +trainer.use_submitit=false"
"$LCM" config show $ref >"$tmp/ref.ini" 2>"$tmp/ref.err"
"$LCM" config show conf/pretrain_mse.ini trainer.output_dir=checkpoints/mse_lcm trainer.experiment_name=training_mse_lcm >"$tmp/ours.ini" 2>&1
# Same values as the recipe file with our names (the origin comments differ: strip them).
strip() { sed -e 's/ *#.*$//' -e '/^$/d' "$1"; }
check ref_command_line_is_the_recipe sh -c "strip() { sed -e 's/ *#.*\$//' -e '/^\$/d' \"\$1\"; }; \
  [ \"\$(strip $tmp/ref.ini)\" = \"\$(strip $tmp/ours.ini)\" ] && grep -q 'max_steps = 250000' $tmp/ref.ini"
check ref_not_needed_notices sh -c "[ \$(grep -c '^lcm: note: .* is not needed: ' $tmp/ref.err) -eq 2 ] && \
  grep -q 'launcher is not needed' $tmp/ref.err && grep -q 'trainer.use_submitit is not needed' $tmp/ref.err"
check unknown_recipe_lists_recipes sh -c "run() { :; }; \"$LCM\" train +pretrain=nope >$tmp/out 2>&1; \
  [ \$? -eq 2 ] && [ \$(wc -l <$tmp/out) -eq 1 ] && grep -q \"no recipe 'nope'.*the recipes are: mse\" $tmp/out"
check alias_shown_with_its_key sh -c "\"$LCM\" config show trainer.lr=1e-3 trainer.data_loading_config.max_tokens=4096 \
  trainer.save_model_every_n_steps=500 trainer.adam_betas=[0.8,0.99] trainer.lr_schedule=noop >$tmp/out 2>&1 && \
  grep -q '^lr = 0.001 .*# command line, as trainer.lr\$' $tmp/out && \
  grep -q '^max_tokens = 4096 .*as trainer.data_loading_config.max_tokens' $tmp/out && \
  grep -q '^checkpoint_every = 500 .*as trainer.save_model_every_n_steps' $tmp/out && \
  grep -q '^beta1 = 0.8 .*as trainer.adam_betas' $tmp/out && grep -q '^beta2 = 0.99 .*as trainer.adam_betas' $tmp/out && \
  grep -q '^schedule = constant .*as trainer.lr_schedule' $tmp/out"
check unsupported_ref_key_says_why sh -c "\"$LCM\" config show trainer.lr_schedule=wsd >$tmp/out 2>&1; [ \$? -eq 2 ] && \
  [ \$(wc -l <$tmp/out) -eq 1 ] && grep -q 'wsd (warmup-stable-decay) are not implemented' $tmp/out && \
  \"$LCM\" config show trainer.criterion.name=x >$tmp/out 2>&1; [ \$? -eq 2 ] && grep -q 'does not support: the loss is fixed' $tmp/out"
# every row of the table is documented
check reference_keys_documented sh -c "[ \$(\"$LCM\" config refkeys | wc -l) -ge 40 ] && \"$LCM\" config refkeys | cut -f1 | while read -r k; do \
  grep -q \"^| \\\`\$k\\\` |\" docs/reference-keys.md || { echo \"\$k not in docs/reference-keys.md\" >&2; exit 1; }; done"

# ---- 2. suggestions -----------------------------------------------------------------------------
check did_you_mean_across_sections sh -c "\"$LCM\" config show trainer.beta1=0.8 >$tmp/out 2>&1; [ \$? -eq 2 ] && \
  grep -q 'did you mean optim.beta1?' $tmp/out"
check did_you_mean_command sh -c "\"$LCM\" trian >$tmp/out 2>&1; [ \$? -eq 2 ] && [ \$(wc -l <$tmp/out) -eq 1 ] && \
  grep -q 'did you mean .lcm train.?' $tmp/out"
check help_command sh -c "\"$LCM\" help train >$tmp/out 2>&1 && grep -q '^usage: lcm train' $tmp/out"
check help_anywhere sh -c "\"$LCM\" train trainer.max_steps=5 --help >$tmp/out 2>&1 && grep -q '^usage: lcm train' $tmp/out && \
  \"$LCM\" data inspect x.lcmd --help >$tmp/out 2>&1 && grep -q '^usage: lcm data inspect' $tmp/out"
check flag_given_a_value_names_it sh -c "\"$LCM\" config keys --markdown yes >$tmp/out 2>&1; [ \$? -eq 2 ] && \
  grep -q \"option '--markdown' takes no value, but 'yes' follows it\" $tmp/out"

# ---- 3. small recipes ---------------------------------------------------------------------------
check base_1_6b_derives_ffn sh -c "grep -q '^ffn_inner_dim = 0' conf/model/base_lcm_1_6b.ini && \
  \"$LCM\" model info conf/model/base_lcm_1_6b.ini | grep -q 'total: 1649185792 parameters' && \
  \"$LCM\" model info conf/pretrain_mse.ini model.model_dim=1024 model.num_heads=8 | grep -q 'ffn.gate_proj.weight .*\[2816, 1024\]'"
check warmup_hint sh -c "\"$LCM\" config show conf/pretrain_mse.ini trainer.max_steps=500 >$tmp/out 2>&1; [ \$? -eq 2 ] && \
  [ \$(wc -l <$tmp/out) -eq 1 ] && grep -q 'set optim.warmup_steps=20 ' $tmp/out"

# ---- 4. resume tells the truth; 7. train.log records a signal stop ---------------------------------
"$LCM" data synth model.sonar_dim=16 synth.dim=16 synth.latent_dim=8 synth.train_docs=200 synth.valid_docs=0 \
  synth.max_len=40 synth.mean_len=12 -o "$tmp/data" >"$tmp/synth.log" 2>&1 || { cat "$tmp/synth.log"; exit 1; }
tiny="model.sonar_dim=16 model.model_dim=16 model.num_layers=2 model.num_heads=2 data.max_seq_len=16 \
data.max_tokens=96 data.train=$tmp/data/train.lcmd trainer.log_every=1 trainer.validate_every=0 trainer.plot=false \
optim.warmup_steps=2 trainer.output_dir=$tmp/run"
"$LCM" train $tiny trainer.devices=cpu:1 trainer.max_steps=3 trainer.experiment_name=exp_one >"$tmp/t1" 2>&1
check experiment_name_in_log_and_metrics sh -c "grep -q 'experiment exp_one' $tmp/run/train.log && \
  grep -q '\"event\":\"start\",\"experiment\":\"exp_one\"' $tmp/run/metrics.jsonl && \
  grep -q '^experiment_name = exp_one' $tmp/run/config.ini"
"$LCM" train $tiny trainer.devices=cpu:2 trainer.max_steps=6 >"$tmp/out" 2>&1
check resume_global_batch_and_schedule sh -c "grep -q 'the global batch changes from 96 to 192 concepts per step .*no whole trainer.grad_accum keeps it with 2 devices; data.max_tokens=48 does' $tmp/out && \
  grep -q 'trainer.max_steps changed from 3 to 6 .*the schedule bends at step 4' $tmp/out && \
  grep -q '\"step\":3,\"event\":\"resume\"' $tmp/run/metrics.jsonl"
"$LCM" train $tiny trainer.devices=cpu:1 trainer.max_steps=8 >"$tmp/out" 2>&1
check resume_keeps_batch_with_grad_accum grep -q 'from 192 to 96 concepts per step .*to keep it, set trainer.grad_accum=2' "$tmp/out"
before=$(ls "$tmp/run/checkpoints")
"$LCM" train $tiny model.model_dim=32 model.num_heads=4 trainer.devices=cpu:1 trainer.max_steps=9 >"$tmp/out" 2>&1
rc=$?
check resume_another_model sh -c "[ $rc -eq 2 ] && [ \$(wc -l <$tmp/out) -eq 1 ] && \
  grep -q 'holds the run of another model (.*model.model_dim 16 there, 32 now.*choose a new trainer.output_dir' $tmp/out && \
  [ \"\$(ls $tmp/run/checkpoints)\" = \"$before\" ]"
"$LCM" train $tiny trainer.devices=cpu:1 trainer.max_steps=100000 optim.warmup_steps=2 >"$tmp/t2" 2>&1 &
pid=$!
i=0
while [ $i -lt 300 ] && [ "$(grep -c '"loss"' "$tmp/run/metrics.jsonl")" -lt 11 ]; do sleep 0.1; i=$((i + 1)); done
kill -TERM $pid
wait $pid
rc=$?
check train_log_records_signal_stop sh -c "[ $rc -eq 0 ] && grep -q 'stopped by SIGTERM after step [0-9]*, with a checkpoint' $tmp/run/train.log"

# ---- 6. make test's Python packages: without root, the one command that installs them -------------
mkdir -p "$tmp/fresh/tools" "$tmp/fakebin"
cp tools/install-deps.sh "$tmp/fresh/tools/"
printf '#!/bin/sh\necho 1000\n' >"$tmp/fakebin/id"
chmod +x "$tmp/fakebin/id"
PATH="$tmp/fakebin:$PATH" bash "$tmp/fresh/tools/install-deps.sh" --python >"$tmp/out" 2>&1
rc=$?
if ! command -v dpkg-query >/dev/null 2>&1; then echo "SKIP install_deps_python_without_root: not a Debian system"; else
check install_deps_python_without_root sh -c "[ $rc -eq 0 ] && [ ! -e $tmp/fresh/.venv ] && [ \$(wc -l <$tmp/out) -eq 1 ] && \
  grep -q 'sudo apt-get install -y python3-torch python3-numpy python3-matplotlib python3-venv && /usr/bin/python3 -m venv --system-site-packages .venv && .venv/bin/pip install .pyarrow<26. safetensors tensorboard' $tmp/out"
fi
# .ci/run installs the same (its pip line and Debian packages)
check ci_installs_the_same sh -c "grep -q \"pip install -q 'pyarrow<26' safetensors tensorboard\" .ci/run && \
  for p in python3-torch python3-numpy python3-matplotlib python3-venv; do grep -q \"for p in .*\$p\" .ci/run || exit 1; done"
