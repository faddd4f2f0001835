# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # lossjax from a notebook
#
# A worked session: run a small sweep, look at its curves, import a loss and check its
# gradient, then plug in a loss of your own. The file is a notebook in jupytext's percent
# format: open it in VS Code or JupyterLab with jupytext, read the executed copy
# `experiments/walkthrough.ipynb` (`make notebook` makes it from this file), or run it as a
# script. The test suite runs it
# (`tests/test_walkthrough.py`), so it cannot drift from the code. It trains on the digits data
# that ship with lossjax, in under a minute on two CPU cores.

# %%
# %matplotlib inline
import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

import lossjax
from lossjax import losses

# %% [markdown]
# ## 1. Run a sweep
#
# `lossjax.run` takes a config file, a dict shaped like one, or a `Config`, plus the same
# `key=value` overrides as `lossjax sweep --set`. It returns the results, also written to
# `runs/walkthrough/` (`overwrite=True` replaces an earlier run of this notebook, and only a
# folder lossjax made).

# %%
config = {
    "name": "walkthrough",
    "seeds": [0, 1],
    "epochs": 4,
    "batch_size": 64,
    "losses": ["cross_entropy", "exp_mse"],
    "dataset": {"name": "digits"},
    "model": {"hidden": [[32]]},
    "optimizer": {"learning_rate": {"cross_entropy": [0.1], "exp_mse": [0.02]}},
    "eval": {"target_accuracy": 0.8},
}
res = lossjax.run(config, output_dir="runs", overwrite=True)
res.summary[["loss", "learning_rate", "test_acc_mean", "test_acc_ci95", "epochs_to_target_mean"]]

# %% [markdown]
# `res.epochs` holds one row per member and epoch; `res.config` the resolved config;
# `res.env` where and with what it ran.

# %%
per_epoch = res.epochs.groupby(["loss", "epoch"])["test_acc"].mean().unstack("loss")
print(per_epoch)
print("ran on", res.env["device_kind"], "with jax", res.env["jax"])

# %% [markdown]
# ## 2. Look at the curves
#
# Each plot comes back as a matplotlib figure, which a notebook shows inline once
# `%matplotlib inline` has run (as in the first cell: lossjax draws without pyplot, so nothing
# else tells the notebook how to show a figure).

# %%
res.plot("test_accuracy")

# %% [markdown]
# Near the top of the accuracy axis the differences that matter are in the errors: the
# `test_error` plot draws 1 − test accuracy on a log axis, where 2% against 4% error is as far
# apart as 10% against 20%.

# %%
res.plot("test_error")

# %% [markdown]
# A finished folder loads again at any time, without rerunning anything.

# %%
again = lossjax.load(res.path)
assert again.summary.equals(res.summary)

# %% [markdown]
# ## 3. Import a loss and check its gradient
#
# The losses take logits and one-hot labels and return one value per example. Each has a
# closed-form gradient with respect to the logits; here it is checked against autodiff, and
# autodiff against finite differences.

# %%
logits = jax.random.normal(jax.random.key(0), (4, 10))
labels = jax.nn.one_hot(jnp.array([3, 1, 4, 1]), 10)
autodiff = jax.grad(lambda z: losses.exp_mse(z, labels).sum())(logits)
np.testing.assert_allclose(losses.exp_mse_grad(logits, labels), autodiff, rtol=1e-5, atol=1e-7)
check_grads(lambda z: losses.exp_mse(z, labels), (logits,), order=1, modes=["rev"])
frac_up, norm = losses.gradient_sign_stats(autodiff, labels)
print(f"exp-MSE pushes up {float(frac_up):.0%} of the wrong-class logits (it never does)")

# %% [markdown]
# ## 4. Plug in a loss of your own
#
# A sweep names a user loss as `'module:function'`; a function defined in this notebook is
# `'__main__:name'`. Here: cross-entropy with label smoothing (Szegedy et al., "Rethinking the
# Inception architecture", CVPR 2016), swept beside plain cross-entropy.


# %%
def smoothed_ce(logits, labels, eps=0.1):
    k = labels.shape[-1]
    target = labels * (1 - eps) + eps / k
    return -jnp.sum(target * jax.nn.log_softmax(logits), axis=-1)


mine = lossjax.run({
    **config,
    "name": "walkthrough_smoothed",
    "losses": ["cross_entropy", "__main__:smoothed_ce"],
    "optimizer": {"learning_rate": {"cross_entropy": [0.1], "__main__:smoothed_ce": [0.1]}},
}, output_dir="runs", overwrite=True, progress=False)
mine.summary[["loss", "test_acc_mean", "test_acc_ci95"]]

# %% [markdown]
# ## 5. Compare sweeps
#
# One table and one figure across results folders.

# %%
both = lossjax.compare([res.path, mine.path])
both.table[["sweep", "loss", "test_acc_mean", "test_acc_ci95"]]

# %% [markdown]
# ## 6. Losses from the literature, and how good their probabilities are
#
# Besides the four, lossjax has the square loss rescaled for many classes (Hui & Belkin, ICLR
# 2021), squentropy (Hui, Belkin & Wright 2023), label smoothing (Szegedy et al. 2016) and the
# focal loss (Lin et al. 2017), each with its closed-form gradient. A mapping sweeps a loss's
# parameters; each setting is a loss of its own, named by its label. Every evaluation also
# measures the probabilities `softmax(logits)`: negative log-likelihood (`test_ce`), Brier
# score and expected calibration error (15 bins, Guo et al. 2017), and again after temperature
# scaling (one temperature per model, fitted on the validation split at the last epoch).
# Softmax of a square loss's logits is not that loss's own probability model: scaling shows
# how much of its poor NLL a single temperature repairs.

# %%
literature = lossjax.run({
    **config,
    "name": "walkthrough_literature",
    "losses": ["cross_entropy", "mse", "squentropy", {"name": "focal", "gamma": [1, 2]}],
    "optimizer": {"learning_rate": {"cross_entropy": [0.1], "mse": [0.3], "squentropy": [0.1],
                                    "focal": [0.3]}},
}, output_dir="runs", overwrite=True, progress=False)
literature.summary[["loss", "test_acc_mean", "test_nll_mean", "test_ece_mean",
                    "temperature_mean", "test_nll_ts_mean", "test_ece_ts_mean"]]

# %% [markdown]
# The reliability diagram: accuracy against confidence per bin, before (solid) and after
# (dashed) temperature scaling; a calibrated model sits on the diagonal.

# %%
literature.plot("reliability")
