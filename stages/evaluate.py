"""Stage `evaluate`: judge every descent run against the closed-form least-squares solution.

The closed form of each recipe (scikit-learn's, on exactly the rows the variants trained
on, its loss in the recipe's convention) comes from stage `solve`. Each variant's seeds
give a spread (mean, sd, 95 % interval), and the variants are compared pair by pair over
the same seeds. Writes:
- metrics/final_loss.json  <recipe>.<variant>: mean final loss over the seeds (the headline)
- metrics/evaluate.json    every figure's spread, the closed form, the paired comparisons
- metrics/seeds.json       each seed's final loss, excess loss and examples to target
- metrics/speed.json       wall-clock seconds (vary from run to run)
- plots/loss/<recipe>.csv, plots/seconds/<recipe>.csv  mean curves with their bands (and
                           the predicted mean, for batches drawn with replacement)
"""
from __future__ import annotations

from descent import config as configuration
from descent import paths
from descent.io import ROOT, cli, write_csv, write_json


def main() -> None:
    config = configuration.load()
    from descent.data import recipe_sources
    from descent.judge import judge_all, load_closed_form
    from descent.theory import problem_of

    # Each data set read as its design matrix [X, 1]: theory's problem, without a copy (a
    # set above data.STREAMED_ROWS rows read from its file a block at a time instead).
    problems = {name: problem_of(source)
                for name, source in recipe_sources(config, ones=True).items()}
    judged = judge_all(config, load_closed_form(config.recipes), problems)
    for name, frame in judged.bands.items():
        # the exact expected loss, where a recipe's batches are drawn with replacement
        columns = ["variant", "loss", "low", "high", "diverged", "closed_form",
                   *(["predicted"] if "predicted" in frame else [])]
        blank = ("predicted",) if "predicted" in frame else ()  # past float64: diverges
        write_csv(ROOT / paths.loss_plot(name), frame[["epoch", "examples", "updates",
                                                      *columns]], blank, float_format="%.7g")
        write_csv(ROOT / paths.seconds_plot(name), frame[["seconds", *columns]], blank,
                  float_format="%.7g")
    write_json(ROOT / paths.HEADLINE, judged.headline)
    write_json(ROOT / paths.EVALUATION, judged.metrics)
    write_json(ROOT / paths.PER_SEED, judged.per_seed)
    write_json(ROOT / paths.SPEED, judged.speeds)
    print(f"judged {config.seeds} seeds x {len(configuration.VARIANTS)} variants x "
          f"{len(config.recipes)} recipes: metrics/final_loss.json (headline), evaluate.json, "
          "seeds.json, speed.json")


if __name__ == "__main__":
    cli(main)()
