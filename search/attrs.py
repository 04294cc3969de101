"""Every trial and study attribute key the service stores, named once.

Study user attributes describe the study; trial user attributes describe one trial. Optuna's own
system attributes ``failed_trial`` and ``retry_history`` (its retry callback's, which ours keeps) are named here too.
"""

from __future__ import annotations

# ---- study user attributes
SPEC = "spec"  # the study file as a mapping (workers on other machines read it)
ARTIFACTS = "artifacts"  # the artifact folder
N_TRIALS = "n_trials"  # the study-wide number of search trials planned (workers create them up to this)
CONFIRMATIONS = "confirmations"  # [{"images", "seeds", "rows": [per config: trial, seed values, mean...]}, ...]

# ---- trial user attributes: what ran
CONFIG = "config"  # the TrainConfig of the trial, as a mapping
SEED = "seed"  # the training seed
DEVICE = "device"  # where it ran
WORKER = "worker"  # who ran it: "slurm JOB_TASK@host" in a Slurm array, else "host:pid" (search/execution/slurm.py)
PRECISION = "precision"  # {"mode": fp32|bf16[+channels_last], "table": images/s per mode, "device": name}
SAMPLER_SEED = "sampler_seed"  # the seed of the sampler that proposed this trial's parameters
WARM_START = "warm_start"  # index into the study file's warm_start list (an enqueued known-good config)
CONFIRM = "confirm_of"  # a seed-confirmation trial: the number of the trial it re-runs
SEED_OVERRIDE = "seed_override"  # the fresh training seed of a seed-confirmation trial
CONFIRM_IMAGES = "confirm_images"  # the images a confirmation trains (the production budget; default: the trial's)

# ---- trial user attributes: progress and results
LOSSES = "loss_history"  # [{"mark": images, "d_loss": x, "g_loss": y, <objective>: v}, ...] per evaluation
IMAGES_SEEN = "images_seen"
WALL_SECONDS = "wall_seconds"
IMAGES_PER_S = "images_per_s"
FINAL_VALUE = "final_value"  # the objective at the end of the budget (the trial's value)
BEST_VALUE = "best_value"  # the best objective seen at any evaluation
SHAPE = "shape"  # (C, H, W) of the generated images
SAMPLES_ARTIFACT = "samples_artifact"  # the latest sample grid (the last evaluation's)
GRIDS = "grids"  # [{"mark": images, "artifact": id, "trial_id": id}, ...]: one grid per evaluation (thinned)
GENERATOR_ARTIFACT = "generator_artifact"
METRICS = "metrics"  # every metric of the last evaluation: fid/kid, precision, recall, density, coverage, classes
CLASS_SHARES = "class_shares"  # each class's share of the last evaluation's samples (domain classifier)
FEASIBLE = "feasible"  # every constraint holds at the trial's end (the values: Optuna's trial.constraints, per metric)
CONSTRAINT_MISSES = "constraint_misses"  # constraints_at: export: {metric: Optuna-style value, None: not measured},
# kept here instead of trial.constraints so that the sampler does not model them
PRUNE_REASON = "prune_reason"
FAIL_REASON = "fail_reason"

# ---- trial user attributes: population-based training (search/strategy/pbt.py)
PBT = "pbt"  # {"member", "generation", "parent_member", "parent_trial", "exploit", ["old", "new"]}
PBT_SOURCE = "pbt_source_checkpoint"  # artifact id of the checkpoint this segment starts from
PBT_CHECKPOINT = "pbt_checkpoint"  # artifact id of this segment's final checkpoint (the next segment's source)
PBT_START_WEIGHTS = "pbt_start_weights"  # digest of the weights the segment started from (its source's)
PBT_END_WEIGHTS = "pbt_end_weights"  # digest of the weights it ended with

# ---- trial user attributes: promotion by continuation (search/strategy/promotion.py)
RUNG = "rung"  # the rung a trial trains to: 0 (budget.trial_images), 1.. (promotion.rungs)
CONTINUES = "continues"  # a continuation: the number of the trial whose checkpoint it continues (one rung below)
PROMOTION = "promotion"  # on a continuation: the decision {"rung", "rank", "of", "top", "value", "cutoff"}
RUNG_CHECKPOINT = "rung_checkpoint"  # artifact id of a rung trial's final checkpoint (what a continuation starts from)

# ---- trial user attributes: fault tolerance
CHECKPOINT = "checkpoint_artifact"  # id of the running trial's last whole checkpoint in the artifact store
CHECKPOINT_SLOTS = "checkpoint_slots"  # the two artifact ids a trial writes its checkpoints to, in turn
RESUMED_FROM = "resumed_from_trial"  # the dead trial a retry resumed from
RESUME_SKIPPED = "resume_skipped"  # why a retry started from scratch (the dead trial's checkpoint gone or unreadable)

# ---- Optuna's system attribute (RetryFailedTrialCallback)
FAILED_TRIAL = "failed_trial"  # on a retry: the number of the first failed trial of its chain
RETRY_HISTORY = "retry_history"  # on a retry: every failed trial of its chain, oldest first (search/store/retry.py)
CRASHES = "gan_search_crashes"  # on a retry: crashes in its chain (hand-backs on SIGTERM do not count: max_retry)

# ---- trial system attributes of the storage proxy path (search/store/proxy.py)
PROXY_HEARTBEAT = "gan_search_heartbeat"  # wall-clock time of the running trial's last heartbeat (no RDB heartbeats)
SURPLUS = "gan_search_surplus"  # a trial created after the plan was full (lock-free claims); failed at once, not counted
