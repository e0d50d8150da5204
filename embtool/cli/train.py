"""``train-step``: one (or many) optimisation steps on a table, state kept in the file."""
from __future__ import annotations

import click

from . import cli
from .common import examples, info, output_options, progress, scheduler_option, tensor_option

#: embtool.optim.NAMES, repeated here so that `embtool --help` does not import numpy
OPTIMIZERS = ("sgd", "adagrad", "sparse-adam", "adam", "adamw")


def _flag(name: str, help_text: str):
    return click.option(f"--{name}/--no-{name}", default=None, help=help_text)


@cli.command("train-step", epilog=examples(
    "embtool train-step emb.safetensors -i ids.json --grad grad.npy --optimizer adam --lr 0.01",
    "embtool train-step emb.safetensors -i ids.npy --grad grad.npy -f json",
    "embtool train-step emb.safetensors --batches steps.npz --optimizer sparse-adam -f jsonl >> log.jsonl",
    "embtool train-step big.index.json -i ids.npy --grad grad.npy --scheduler tcp://10.0.0.1:8786",
))
@click.argument("table", type=click.Path(dir_okay=False))
@click.option("-i", "--input", "input_path", metavar="IDS",
              help="Indices of any shape from IDS or - (stdin): JSON nested lists, whitespace integers, .npy.")
@click.option("--grad", "grad_path", metavar="FILE",
              help="Upstream gradient of shape (*ids.shape, D): .npy, .safetensors or JSON (or -).")
@click.option("--batches", metavar="FILE",
              help="Many steps from one .safetensors/.npz file with tensors ids.0, grad.0, ids.1, ...")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS),
              help="torch.optim optimizer (default: the table's, else sgd).")
@click.option("--lr", type=float, help="Learning rate (torch's default for the optimizer).")
@click.option("--momentum", type=float, help="SGD momentum.")
@click.option("--dampening", type=float, help="SGD dampening.")
@_flag("nesterov", "SGD Nesterov momentum.")
@click.option("--weight-decay", type=float, help="Weight decay (L2; decoupled for adamw).")
@_flag("maximize", "Maximise instead of minimise.")
@click.option("--lr-decay", type=float, help="Adagrad learning-rate decay.")
@click.option("--initial-accumulator-value", type=float, help="Adagrad initial sum.")
@click.option("--eps", type=float, help="Term added to the denominator.")
@click.option("--betas", type=(float, float), default=None, metavar="B1 B2", help="Adam betas.")
@_flag("amsgrad", "Adam/AdamW AMSGrad variant.")
@click.option("--reset-optimizer", is_flag=True,
              help="Drop the stored optimizer state and start again at step 0 (options not given "
                   "take torch's defaults).")
@click.option("--state", "state_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="Keep the optimizer state in FILE (a safetensors file written with the table, "
                   "atomically), not in the table: the table stays a plain state_dict.")
@tensor_option
@output_options(("json", "jsonl"), default=None)
@scheduler_option
def train_step(table, input_path, grad_path, batches, optimizer, reset_optimizer, state_file, tensor, out,
               **hparams):
    """One torch.optim step on TABLE from indices IDS and upstream gradient GRAD.

    As nn.Embedding + torch.optim: max_norm renorms the looked-up rows first, the backward honours
    padding_idx, scale_grad_by_freq and the table's sparse flag, and the optimizer's state lives
    in the table (optim.* tensors) or, with --state, in a file of its own. Sparse steps log and
    write only the touched rows; others rewrite the file atomically. The summary goes to stderr;
    -f json gives it on stdout.
    """
    from ..render import render_object
    from ..shardtrain import train_step as do_train_step
    from ..training import read_batch, read_batches

    if batches is not None:
        if input_path is not None or grad_path is not None:
            raise click.UsageError("give either --batches or -i/--grad, not both")
        steps = read_batches(batches)
    else:
        if input_path is None or grad_path is None:
            raise click.UsageError("give the indices with -i IDS and the gradient with --grad FILE "
                                   "(or many steps with --batches FILE)")
        if input_path == "-" and grad_path == "-":
            raise click.UsageError("only one of -i and --grad can read stdin")
        steps = [read_batch(input_path, grad_path)]
    with progress(None, "train-step", unit="bytes") as advance:
        summary = do_train_step(table, steps, tensor=tensor, optimizer=optimizer, hparams=hparams,
                                reset_optimizer=reset_optimizer, state=state_file, progress=advance)
    info(_summary_line(summary))
    render_object(summary, out)


def _summary_line(s: dict) -> str:
    what = (f"step {s['step']}" if s["steps_applied"] == 1
            else f"{s['steps_applied']} steps to step {s['step']}")
    written = (f"{s['rows_written']} rows written in place" if s["write"] == "in-place"
               else f"file rewritten ({s['rows_written']} rows changed)")
    return (f"{s['table']}: {what} ({s['optimizer']}), {s['rows_touched']} rows touched, "
            f"grad norm {s['grad_norm']:.6g}, {written}")
