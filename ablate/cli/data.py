"""`ablate data`: write the generated detection set."""

from __future__ import annotations

from pathlib import Path

import typer

from ablate.cli.common import app

data_app = typer.Typer(no_args_is_help=True, help="Data sets: write the generated detection set.")


app.add_typer(data_app, name="data")


@data_app.command("synth-det")
def data_synth_det(
    out: Path = typer.Option(..., "--out", help="Folder to create (it must not exist, or be empty)."),
    seed: int = typer.Option(0, "--seed", help="Seed; the same seed writes byte-identical files."),
    n_train: int = typer.Option(1024, "--train", help="Training images."),
    n_val: int = typer.Option(64, "--val", help="Validation images."),
    image_size: int = typer.Option(128, "--image-size", help="Image side in pixels."),
    classes: str = typer.Option("circle,square,triangle", "--classes",
                                help="Comma-separated shapes, in class order: circle, square, triangle, "
                                     "cross, star."),
) -> None:
    """Write the synthetic YOLO-format detection set (shapes on textured backgrounds) and its data.yaml."""
    import time

    from ablate.data.detection import generate_synth_det

    start = time.perf_counter()
    yaml_path = generate_synth_det(out, seed=seed, n_train=n_train, n_val=n_val, image_size=image_size,
                                   classes=classes)
    names = [c.strip() for c in classes.split(",") if c.strip()]
    typer.echo(str(yaml_path))
    typer.echo(f"{n_train} train / {n_val} val images of {image_size} px, {len(names)} classes "
               f"({', '.join(names)}), seed {seed}, {time.perf_counter() - start:.1f}s")

