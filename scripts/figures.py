"""Snakemake entry point of rule `figures` (thin: parse snakemake.*, call vox3d.report.figures)."""

import _repo  # noqa: F401  (puts the repository on sys.path)

from vox3d.face.face_model import face_model_settings
from vox3d.joblog import job_log
from vox3d.media.split import read_meta
from vox3d.report import distill_figures, figures, identity_figures
from vox3d.voice.evaluate import EvaluateSettings

smk = snakemake  # noqa: F821  (injected by Snakemake)
inp, out = smk.input, smk.output

with job_log(smk.log[0]):
    if smk.rule == "unsupervised_figures":
        distill_figures.plot_gan_curves(inp.log_csv, out.gan_curves)
        distill_figures.plot_unsupervised_faces(
            inp.model,
            inp.predictions,
            list(inp.features),
            face_model_settings(smk.params.face_model, smk.params.assets),
            out.faces,
            n=EvaluateSettings.from_section(smk.params.settings).n_figures,
        )
        raise SystemExit(0)
    figures.plot_are_bars(inp.metrics, out.are)
    figures.plot_comparisons(inp.comparisons, out.comparisons)
    if inp.log_csv.endswith("unsupervised_log.csv"):  # train.mode: unsupervised
        distill_figures.plot_gan_curves(inp.log_csv, out.curves)
    else:
        figures.plot_training_curves(inp.log_csv, out.curves)
    meta = read_meta(inp.meta[0]) if inp.meta else {}
    figures.plot_dataset_stats(
        out.stats,
        manifest_tsv=inp.manifest,
        fit_stats_tsv=inp.fit_stats,
        rejects_tsvs=list(inp.rejects),
        split_tsv=inp.split,
        genders={k: m.gender for k, m in meta.items()},
    )
    face_settings = face_model_settings(smk.params.face_model, smk.params.assets)
    identity_figures.plot_voice_directions(inp.predictions, out.voice_directions, face_settings)
    identity_figures.plot_identities(
        inp.predictions,
        face_settings,
        out.identities,
        n=EvaluateSettings.from_section(smk.params.settings).n_figures,
        fit_shards=list(inp.fit_shards),
        extract_shards=list(inp.extract_shards),
        videos_dir=smk.params.videos_dir,
    )
