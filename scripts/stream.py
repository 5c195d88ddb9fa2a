"""Snakemake script of `stream_shard` (one shard -> extract HDF5 without frames, fit HDF5 and
features HDF5 in one pass).  Thin: all logic is in vox3d.fitting.stream."""

import json

import _repo  # noqa: F401  (puts the repository on sys.path)

from vox3d.audio.fbank import FeatureConfig
from vox3d.fitting.fit import FitConfig
from vox3d.fitting.multigpu import pin_one_gpu
from vox3d.fitting.stream import decode_in_processes, stream_shard
from vox3d.joblog import job_log
from vox3d.media.extract import ExtractSettings

smk = snakemake  # noqa: F821  (injected by Snakemake)

with job_log(smk.log[0]) as log:
    if int(smk.resources.get("gpu", 0) or 0) == 1:  # a card of its own on a multi-GPU node
        held = pin_one_gpu()
        if held is not None:
            print(f"GPU: card {held[0]} (CUDA_VISIBLE_DEVICES)", file=log)
    st = ExtractSettings.from_section(smk.params.extract)
    res = stream_shard(
        smk.input.shard,
        smk.params.videos_dir,
        smk.output.extract,
        smk.output.fit,
        FitConfig.from_config(dict(smk.params.settings), threads=1),
        frame_rate=st.frame_rate,
        min_duration=st.min_duration,
        decoder=st.decoder,
        workers=smk.threads,
        hwaccel=None if st.hwaccel == "none" else st.hwaccel,
        features_h5=smk.output.features,
        features_cfg=FeatureConfig.from_mapping(dict(smk.params.features)),
        keep_audio=st.keep_audio,
        processes=decode_in_processes(st.decode_workers, smk.threads),
    )
    print(json.dumps(res, sort_keys=True), file=log)
