"""The README's chapter pictures and table: one small PNG per chapter, drawn offline from the
package's shipped checkpoints, and the table between the README's markers.

    python tools/readme_figures.py               # draw docs/figures/*.png, then rewrite the table
    python tools/readme_figures.py --table-only  # only the table (after a timed book build, say)
    python tools/readme_figures.py --only 05 08  # redraw some chapters' pictures

The table's run-time column is read from ``notebooks/runtimes.json`` (the quick profile's
seconds per chapter, as ``unclip_lite.profiles.chapter_runtime`` reads it); without that file
the table has no such column. One process, one torch thread: it shares the machine.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "figures"
README = ROOT / "README.md"
RUNTIMES = ROOT / "notebooks" / "runtimes.json"
BEGIN, END = "<!-- BEGIN chapters: written by tools/readme_figures.py -->", "<!-- END chapters -->"
WIDTH_PX, MAX_BYTES = 480, 60_000

# (notebook stem, title, one line for the learner)
CHAPTERS = [
    ("00_worlds_and_tokens", "Worlds and tokens",
     "The Shapes and Emoji worlds every model learns from, the held-out colour × shape pairs, and CLIP's tokenizer."),
    ("01_clip", "CLIP: two towers, one space",
     "A vision transformer and a text transformer whose embeddings meet in one space, scored by cosine similarity."),
    ("02_contrastive_training", "Contrastive training",
     "InfoNCE trains that CLIP live; zero-shot classification then names colour × shape pairs it never saw."),
    ("03_clip_guided_generation", "Drawing with CLIP",
     "CLIPDraw and VQGAN-CLIP: pictures made by optimising a CLIP score, and how that score is fooled."),
    ("04_diffusion", "Diffusion",
     "Noise an image step by step, learn to undo it, and sample with DDPM and DDIM."),
    ("05_glide", "GLIDE",
     "Text-conditional diffusion and classifier-free guidance: the scale that trades variety for accuracy."),
    ("06_guidance_inpainting_upsampling", "Guidance, inpainting, upsampling",
     "CLIP and classifier guidance beside classifier-free guidance; redrawing a hole; a text-conditional upsampler."),
    ("07_prior", "The prior",
     "unCLIP's first half: from a caption to a CLIP image embedding, by diffusion or autoregression."),
    ("08_decoder", "The decoder",
     "unCLIP's second half: a GLIDE that draws from a CLIP image embedding, then the upsampling cascade."),
    ("09_manipulations", "Playing in CLIP space",
     "Variations, interpolations and text diffs through the decoder, and where unCLIP fails."),
    ("10_scaling", "Scaling up",
     "The papers' models on GPUs: memory and FLOPs planned, bf16, activation checkpointing, FSDP, sharded data."),
]


# ----------------------------------------------------------------------------- the table


def _other_machine(record: dict, other: dict) -> str:
    """One sentence comparing another machine's build with this one, over the chapters both timed."""
    both = sorted(set(record.get("chapters", {})) & set(other.get("chapters", {})))
    if not both:
        return ""
    took = lambda r: round(sum(r["chapters"][c] for c in both))  # noqa: E731
    span = f"chapters {both[0][:2]}–{both[-1][:2]}"
    return (f" On {other.get('hardware', 'another CPU')} {span} took {took(other) // 60} min {took(other) % 60:02d} s, "
            f"against {took(record) // 60} min {took(record) % 60:02d} s here.")


def _runtime(stem: str, record: dict | None) -> str | None:
    seconds = (record or {}).get("chapters", {}).get(stem)
    if seconds is None:
        return None
    minutes, secs = divmod(round(float(seconds)), 60)
    return f"{minutes} min {secs:02d} s"


def chapters_table() -> str:
    """The Markdown between the README's markers: a picture, a title and a line per chapter."""
    try:
        record = json.loads(RUNTIMES.read_text())
    except (OSError, ValueError):
        record = None
    timed = record is not None and any(_runtime(stem, record) for stem, _, _ in CHAPTERS)
    head = "| | chapter |" + (" run time (quick) |" if timed else "")
    rule = "|---|---|" + ("---|" if timed else "")
    rows = [BEGIN, "", head, rule]
    for stem, title, line in CHAPTERS:
        number = stem[:2]
        picture = f'<img src="docs/figures/{stem}.png" width="320" alt="chapter {number}: {title}">'
        cell = f"**{number} · [{title}](notebooks/{stem}.ipynb)**<br>{line}"
        rows.append(f"| {picture} | {cell} |" + (f" {_runtime(stem, record) or '–'} |" if timed else ""))
    rows.append("")
    if timed:
        rows.append(f"Run times: the `quick` profile in the book build of {record.get('date', '?')}, "
                    f"on {record.get('hardware', 'a CPU')}."
                    + "".join(_other_machine(record, other) for other in record.get("also_measured", [])))
    else:
        rows.append("Each chapter's opening cell prints its run time under the `quick` profile.")
    rows += ["", END]
    return "\n".join(rows)


def write_table() -> None:
    text = README.read_text()
    if BEGIN not in text or END not in text:
        sys.exit(f"README.md has no {BEGIN!r} … {END!r} markers")
    start, stop = text.index(BEGIN), text.index(END) + len(END)
    README.write_text(text[:start] + chapters_table() + text[stop:])
    print(f"rewrote the chapter table in {README.relative_to(ROOT)}")


# ----------------------------------------------------------------------------- the pictures


def _save(fig, stem: str) -> None:
    """The figure as a ≤ 60 KB PNG, 480 px wide (a palette of 256 colours when needed)."""
    import matplotlib.pyplot as plt
    from PIL import Image

    fig.set_dpi(100)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=WIDTH_PX / fig.get_size_inches()[0])
    plt.close(fig)
    picture = Image.open(buffer).convert("RGB")
    path = FIGURES / f"{stem}.png"
    for method in (None, Image.Quantize.MEDIANCUT, Image.Quantize.FASTOCTREE):
        out = picture if method is None else picture.quantize(256, method=method, dither=Image.Dither.NONE)
        out.save(path, optimize=True)
        if path.stat().st_size <= MAX_BYTES:
            break
    print(f"{path.relative_to(ROOT)}: {picture.size[0]}x{picture.size[1]} px, {path.stat().st_size / 1000:.0f} KB")


def _grid(rows, row_labels, col_labels, title, height=None):
    """A figure of image rows (each [N, 3, H, W] or a list of [3, H, W]) 4.8 in wide."""
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), len(col_labels)
    side = 4.8 / (n_cols + 0.35)
    fig, axes = plt.subplots(n_rows, n_cols, squeeze=False, figsize=(4.8, height or side * n_rows * 1.12 + 0.45))
    for r, images in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.imshow(images[c].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0 and col_labels[c]:
                ax.set_title(col_labels[c], fontsize=6.5)
            if c == 0 and row_labels[r]:
                ax.set_ylabel(row_labels[r], fontsize=6.5)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 1 - 0.22 / fig.get_size_inches()[1]))
    return fig


def fig_00():
    from unclip_lite.data import shapes

    one, _ = shapes.eval_set("all", 6, resolution=64, seed=3)
    two, _ = shapes.eval_set("train", 6, resolution=64, n_objects=2, seed=3)
    return _grid([one, two], ["one object", "two objects"], [""] * 6, "the Shapes world: renders at 64 px")


def _similarity_figure(clip, images, captions, title):
    import matplotlib.pyplot as plt

    sims = clip.encode_images(images) @ clip.encode_texts(captions).T          # [images, captions]
    n = len(captions)
    fig = plt.figure(figsize=(4.8, 4.0))
    grid = fig.add_gridspec(2, n + 2, height_ratios=[1, n], width_ratios=[2.2] + [1] * n + [0.15])
    for j in range(n):
        ax = fig.add_subplot(grid[0, j + 1])
        ax.imshow(images[j].permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.axis("off")
    ax = fig.add_subplot(grid[1, 1:n + 1])
    m = sims.T.numpy()                                                             # rows: captions
    im = ax.imshow(m, cmap="viridis")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                    color="k" if m[i, j] > (m.min() + m.max()) / 2 else "w")
    ax.set_xticks([]), ax.set_yticks(range(n), captions, fontsize=6.5)
    bar = fig.colorbar(im, cax=fig.add_subplot(grid[1, n + 1]))
    bar.ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=8)
    fig.subplots_adjust(left=0.02, right=0.9, top=0.9, bottom=0.03, wspace=0.08, hspace=0.08)
    return fig


def fig_01():
    from unclip_lite.clip.bundle import load_clip
    from unclip_lite.data import shapes

    pairs = [("red", "star"), ("blue", "circle"), ("green", "heart"), ("yellow", "square"), ("purple", "triangle")]
    images = shapes.render(shapes.make_scenes([c for c, _ in pairs], [s for _, s in pairs]), 32)
    captions = [shapes.zero_shot_prompt(c, s) for c, s in pairs]
    return _similarity_figure(load_clip("clip-shapes-tiny"), images, captions,
                              "clip-shapes-tiny: cosine of each caption with each image")


def fig_02():
    from unclip_lite.clip.bundle import load_clip
    from unclip_lite.clip.zeroshot import rank_images
    from unclip_lite.data import shapes

    clip = load_clip("clip-shapes-tiny")
    held = sorted(shapes.HELD_OUT_PAIRS)[:2]                                       # pairs never in training
    pool, _ = shapes.eval_set("all", 1000, resolution=32, seed=11)
    queries = [shapes.zero_shot_prompt(c, s) for c, s in held] + ["a red heart"]
    rows, labels = [], []
    for q in queries:
        order, scores = rank_images(clip, pool, q)
        rows.append(pool[order[:6]])
        labels.append(q.replace("a ", "", 1).replace(" ", "\n", 1) + ("\n(held out)" if q != queries[-1] else ""))
    return _grid(rows, labels, ["1st", "2nd", "3rd", "4th", "5th", "6th"],
                 f"clip-shapes-tiny ranks {len(pool)} renders for each caption")


def fig_03():
    from unclip_lite.kinds import load_bundle

    clipdraw, vqgan_clip = load_bundle("clipdraw-shapes-tiny"), load_bundle("vqgan-clip-shapes-tiny")
    prompts = ["a red star", "a blue circle"]
    drawings = [clipdraw.draw(p, seed=0, steps=150) for p in prompts]
    latents = [vqgan_clip.draw(p, seed=0, steps=100) for p in prompts]
    return _grid([drawings + latents], [""], [f"CLIPDraw\n'{p}'" for p in prompts] +
                 [f"VQGAN-CLIP\n'{p}'" for p in prompts], "optimised until clip-shapes-tiny likes them")


def fig_04():
    import torch

    from unclip_lite.data import shapes
    from unclip_lite.diffusion import ddim_sample_loop_progressive
    from unclip_lite.glide.bundle import load_glide
    from unclip_lite.glide.guidance import classifier_free_guidance

    glide = load_glide("glide-shapes-tiny")
    diffusion, steps = glide.diffusion, 25
    x0 = shapes.render(shapes.make_scenes("red", "star"), 32) * 2 - 1                # [1, 3, 32, 32]
    ts = [0, 200, 400, 600, 800, 999]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    forward = [diffusion.q_sample(x0, torch.tensor([t]), noise)[0] for t in ts]
    model_fn = classifier_free_guidance(glide.model, glide.tokenize(["a red star"]), 3.0)
    with torch.no_grad():
        run = list(ddim_sample_loop_progressive(diffusion, model_fn, (1, 3, 32, 32), steps=steps, progress=False,
                                                generator=torch.Generator().manual_seed(0)))
    pick = [min(range(len(run)), key=lambda k: abs(run[k].t - t)) for t in ts]
    reverse = [run[k].x_t[0] for k in pick]
    rows = [[(x + 1) / 2 for x in forward], [(x + 1) / 2 for x in reverse]]
    return _grid(rows, ["forward q(x_t | x_0)", "GLIDE, DDIM"], [f"t ≈ {t}" for t in ts],
                 "diffusion: noising a render, and GLIDE denoising 'a red star'")


def fig_05():
    from unclip_lite.glide.bundle import load_glide

    glide = load_glide("glide-shapes-tiny")
    prompts = ["a red star", "a blue heart", "a green triangle", "a yellow circle to the left of a purple square"]
    scales = (0.0, 1.0, 3.0)
    rows = [glide.sample(prompts, guidance=s, steps=25, seed=0) for s in scales]
    return _grid(rows, [f"guidance {s:g}" for s in scales], ["a red star", "a blue heart", "a green triangle",
                 "a yellow circle left\nof a purple square"], "glide-shapes-tiny, DDIM-25, same seeds per column")


def fig_06():
    from unclip_lite.data import shapes
    from unclip_lite.glide.bundle import load_glide
    from unclip_lite.glide.inpaint import box_mask, object_box

    inpainter = load_glide("glide-inpaint-shapes-tiny")
    scene = shapes.make_scenes("orange", "square")
    source = shapes.render(scene, 32)                                                # [1, 3, 32, 32]
    mask = box_mask(object_box(scene), 32)                                           # 1 = keep
    prompts = ["a red star", "a blue heart", "a green triangle"]
    n = len(prompts)
    out = inpainter.sample(prompts, guidance=3.0, steps=25, seed=0,
                           inpaint=(source.expand(n, -1, -1, -1), mask.expand(n, -1, -1, -1)))
    row = [source[0], (source * mask + 0.5 * (1 - mask))[0], *out]
    return _grid([row], [""], ["source", "the hole"] + prompts, "inpainting with glide-inpaint-shapes-tiny")


def fig_07():
    import torch

    from unclip_lite.data import shapes
    from unclip_lite.unclip.bundle import PriorBundle

    prior = PriorBundle.load("prior-shapes-tiny")
    clip = prior.clip
    captions = ["a large red star in the top left", "a purple heart", "a blue circle to the left of a yellow star"]
    z_hat = prior.sample(captions, guidance=2.0, candidates=2, seed=0)              # [3, E]
    one, _ = shapes.eval_set("train", 500, resolution=clip.image_size, seed=8)
    two, _ = shapes.eval_set("train", 500, resolution=clip.image_size, n_objects=2, seed=8)
    pool = torch.cat([one, two])
    nearest = (z_hat @ clip.encode_images(pool).T).topk(4, dim=1).indices            # [3, 4]
    rows = [pool[nearest[i]] for i in range(len(captions))]
    labels = ["top left\nred star", "purple\nheart", "blue circle,\nyellow star"]
    return _grid(rows, labels, ["1st", "2nd", "3rd", "4th"],
                 f"the prior's ẑ_i: nearest of {len(pool)} renders", height=4.0)


def fig_08():
    import torch.nn.functional as F

    from unclip_lite.unclip.pipeline import load_unclip

    pipe = load_unclip("unclip-shapes-tiny")
    prompts = ["a large red star in the top left", "a small blue circle", "a green heart",
               "a purple square above a yellow triangle"]
    out = pipe(prompts, seed=0, rerank=2, prior_num_inference_steps=64, decoder_num_inference_steps=20,
               super_res_num_inference_steps="fast27")
    rows = [F.interpolate(stage, size=128, mode="nearest") for stage in out.stages]
    return _grid(rows, [f"{s.shape[-1]} px" for s in out.stages],
                 ["top left\nred star", "small\nblue circle", "green heart", "purple square\nabove yellow triangle"],
                 "unclip-shapes-tiny: prior → decoder → upsamplers")


def fig_09():
    import torch

    from unclip_lite.clip.bundle import load_clip
    from unclip_lite.data import shapes
    from unclip_lite.unclip import manipulate
    from unclip_lite.unclip.decoder import load_decoder

    decoder = load_decoder("decoder-shapes-tiny")
    clip = load_clip(decoder.clip_name)
    thetas = [float(t) for t in torch.linspace(0, 1, 6)]
    ends = [(("red", "star", "center"), ("blue", "star", "center")),
            (("red", "star", "top left"), ("blue", "heart", "bottom right"))]
    rows = []
    for a, b in ends:
        pair = torch.cat([shapes.render(shapes.make_scenes(c, s, size="large", position=p), decoder.image_size)
                          for c, s, p in (a, b)])                                    # [2, 3, R, R]
        z, x_T = manipulate.encode(decoder, clip, pair, steps=50)                    # the bipartite latents
        z_path = torch.stack([manipulate.slerp(z[0], z[1], t) for t in thetas])
        x_path = torch.stack([manipulate.slerp(x_T[0].flatten(), x_T[1].flatten(), t).view_as(x_T[0])
                              for t in thetas])
        rows.append(manipulate.decode(decoder, z_path, x_path, steps=50))
    return _grid(rows, ["", ""], [f"θ = {t:.1f}" for t in thetas],
                 "slerp between two images' (z_i, x_T), decoded by decoder-shapes-tiny")


def fig_10():
    import matplotlib.pyplot as plt

    from unclip_lite.planner import GIB, TABLE_LABELS, plan

    parts = ("weights", "gradients", "optimizer", "fsdp_buffers", "activations")
    plans = [(label, plan(kind, config, 16 * 8, 8, "bf16", fsdp=True, checkpointing=True, gpu_memory_gb=80.0))
             for (kind, config), label in TABLE_LABELS.items()]
    fig, ax = plt.subplots(figsize=(4.8, 2.9))
    for i, (label, p) in enumerate(plans):
        left = 0.0
        for j, part in enumerate(parts):
            gib = getattr(p, part) / GIB
            ax.barh(i, gib, left=left, color=f"C{j}", label=part.replace("_", " ") if i == 0 else None)
            left += gib
        ax.text(left + 0.3, i, f"{p.parameters / 1e9:.2f}B", va="center", fontsize=7)
    ax.set_yticks(range(len(plans)), [label for label, _ in plans], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("GiB per GPU", fontsize=7)
    ax.set_xlim(0, 1.3 * max(p.total for _, p in plans) / GIB)
    ax.tick_params(axis="x", labelsize=7)
    ax.legend(fontsize=6, loc="center right", frameon=False)
    ax.set_title("the papers' models planned on the meta device:\nFSDP on 8 GPUs, bf16, checkpointing, 16 per GPU",
                 fontsize=7)
    fig.tight_layout()
    return fig


def draw(only: list[str]) -> None:
    import matplotlib
    import torch

    matplotlib.use("Agg")
    torch.set_num_threads(1)
    FIGURES.mkdir(parents=True, exist_ok=True)
    for stem, _, _ in CHAPTERS:
        if only and stem[:2] not in only:
            continue
        torch.manual_seed(0)
        with torch.enable_grad() if stem[:2] in ("03", "10") else torch.no_grad():  # CLIPDraw and the planner need gradients
            _save(globals()[f"fig_{stem[:2]}"](), stem)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table-only", action="store_true", help="rewrite the README's table, draw nothing")
    parser.add_argument("--only", nargs="*", default=[], help="chapter numbers to draw (default: all)")
    args = parser.parse_args(argv)
    if not args.table_only:
        draw(args.only)
    write_table()


if __name__ == "__main__":
    main()
