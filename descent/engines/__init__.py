"""The descent engine: one update rule for all three variants (the batch size is the only
difference), R runs at once. Bottom to top, each importing only those below it:

- problem: the shared vocabulary: Plan, Schedule, Runs, the memory estimate, the loss cap,
  the choice of backend.
- compiled: the numba kernel (exact sequential updates, runs in threads): the CPU backend.
- torch_backends: the literal loop (the tutorials' nn.Linear + optim.SGD) and the affine
  scan (GPU).
- dispatch: `train_runs`, the entry point, and the device choice.
"""
