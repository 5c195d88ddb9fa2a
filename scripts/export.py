"""Snakemake script of `export_audio`, `export_lhotse`, `export_hf` and `export_card`
(OUT/voxceleb3d/).  Thin: all logic is in vox3d.report.export, vox3d.report.export_formats
and vox3d.report.card (vox3d.report.card_counts)."""

import json
from pathlib import Path

import _repo  # noqa: F401  (puts the repository on sys.path)

from vox3d.joblog import job_log
from vox3d.report.card import write_card
from vox3d.report.card_counts import StageTables
from vox3d.report.export import StageInputs, collect
from vox3d.report.export_formats import write_audio, write_hf, write_lhotse, write_rejects

smk = snakemake  # noqa: F821  (injected by Snakemake)

with job_log(smk.log[0]) as log:
    inputs = StageInputs(
        manifest=Path(smk.input.manifest),
        extract=tuple(Path(p) for p in smk.input.extract),
        fit=tuple(Path(p) for p in smk.input.fit),
        features=tuple(Path(p) for p in smk.input.features),
        identities=Path(smk.input.identities),
        features_rejects=Path(smk.input.features_rejects),
    )
    col = collect(inputs, smk.params.split, smk.params.val_fraction, smk.params.audio)
    if smk.rule == "export_audio":
        dest = Path(smk.output.audio).parent
        res = write_audio(col, dest, smk.params.videos_dir)
        write_rejects(col, dest)
    elif smk.rule == "export_lhotse":
        res = [str(p) for p in write_lhotse(col, Path(smk.output.recordings).parents[1])]
    elif smk.rule == "export_hf":
        res = [str(p) for p in write_hf(col, Path(smk.output.utterances).parents[1])]
    else:
        out = Path(smk.output.card)
        tables = StageTables(
            Path(smk.input.extract_stats),
            Path(smk.input.extract_rejects),
            Path(smk.input.fit_stats),
            Path(smk.input.fit_rejects),
            Path(smk.input.features_rejects),
        )
        write_card(
            out,
            col,
            tables,
            dict(smk.params.config),
            ground_truth_h5=smk.input.ground_truth[0] if smk.input.ground_truth else None,
            identities_h5=smk.input.identities,
            export_dir=out.parent,
            n_boot=int(smk.params.bootstrap),
        )
        res = str(out)
    print(
        json.dumps({"rule": smk.rule, "utterances": len(col.utterances), "result": res}),
        file=log,
    )
