# The H200 sweep of docs/demo.md. Run on the device from the repository root, with the pycocotools wheel, this
# folder's gpu_sweep_run.py and position-features-and-pixel-loss.patch (as posf.patch) copied into .whl/.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit 1
git apply .whl/posf.patch || patch -p1 < .whl/posf.patch || echo PATCH FAILED
nvidia-smi --query-gpu=name,memory.total --format=csv
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
python3 -c "from maskformer.data.synth import write_dataset; write_dataset('/tmp/data', 800, 100, seed=0)" || exit 1
echo data done $(date +%T)
python3 .whl/gpu_sweep_run.py base 1200 > $OUT/l_base.log 2>&1 && echo base ok &
sleep 1; POSF=3 python3 .whl/gpu_sweep_run.py posf3 1200 > /dev/null 2>&1 && echo posf3 ok &
python3 .whl/gpu_sweep_run.py lr6 1200 train.lr=6e-4 train.warmup_steps=100 > /dev/null 2>&1 && echo lr6 ok &
python3 .whl/gpu_sweep_run.py cw2 1200 model.loss.class_weight=2 model.loss.cost_class=2 > /dev/null 2>&1 && echo cw2 ok &
python3 .whl/gpu_sweep_run.py hd256 1200 model.transformer.hidden_dim=256 model.transformer.ffn_dim=1024 model.pixel_decoder.conv_dim=256 model.pixel_decoder.mask_dim=256 > /dev/null 2>&1 && echo hd256 ok &
python3 .whl/gpu_sweep_run.py bs16 1200 train.batch_size=16 > /dev/null 2>&1 && echo bs16 ok &
python3 .whl/gpu_sweep_run.py enc2noaug 1200 model.pixel_decoder.type=transformer_encoder model.pixel_decoder.encoder_layers=2 model.pixel_decoder.encoder_heads=4 model.pixel_decoder.encoder_ffn_dim=512 model.pixel_decoder.encoder_dropout=0 data.augmentation=none > /dev/null 2>&1 && echo enc2noaug ok &
wait
echo all done $(date +%T)
cat $OUT/results.jsonl
