"""pathdep.theory: closed-form linear theory of path-dependent unlearning (paper Sec. 3, App. C).

Numeric layer (JAX, float64): :mod:`theory.linear` (staged proximal-ridge training),
:mod:`theory.unlearning` (GA dynamics, exact RE distance in log space), :mod:`theory.bound`
(Theorem 3.1, Corollary 1), :mod:`theory.instance` (instances, I/O, the full check).
Beyond the paper: :mod:`theory.quadratic`, :mod:`theory.weakly_local`, :mod:`theory.preference`
(NPO/SimNPO), :mod:`theory.stages` (K > 2 stages, recency). Symbolic layer (sympy, imported on
demand): ``from theory import symbolic``.
"""

import theory._jax  # noqa: F401  (float64 and XLA flags, before any JAX work)
from theory import preference, quadratic, stages, weakly_local
from theory.bound import (
    BoundQuantities,
    bound_from_eigensystem,
    bound_holds_from,
    corollary_t_star,
    corollary_threshold,
    log10_bound,
    log10_tightness,
    theorem_3_1,
)
from theory.instance import (
    Instance,
    InstanceError,
    check_instance,
    load_instance,
    random_instance,
    random_instance_arrays,
    save_instance,
    validate_instance,
)
from theory.linear import (
    commutation_residual,
    gd_stage,
    history_difference,
    history_difference_eq3,
    orders_commute,
    ridge_stage,
    stage_loss,
    train_stages,
    train_stages_gd,
)
from theory.unlearning import (
    forget_eigensystem,
    forget_loss,
    forget_projector,
    ga_fixed_point,
    ga_step,
    ga_trajectory,
    ga_update_matrix,
    iterate_ga,
    log10_forget_loss,
    log10_re_distance,
    log10_trajectory_norm,
    log_sq_norm_of_powers,
    re_distance,
)

__all__ = [
    "BoundQuantities",
    "Instance",
    "InstanceError",
    "bound_from_eigensystem",
    "bound_holds_from",
    "check_instance",
    "commutation_residual",
    "corollary_t_star",
    "corollary_threshold",
    "forget_eigensystem",
    "forget_loss",
    "forget_projector",
    "ga_fixed_point",
    "ga_step",
    "ga_trajectory",
    "ga_update_matrix",
    "gd_stage",
    "history_difference",
    "history_difference_eq3",
    "iterate_ga",
    "load_instance",
    "log10_bound",
    "log10_forget_loss",
    "log10_re_distance",
    "log10_tightness",
    "log10_trajectory_norm",
    "log_sq_norm_of_powers",
    "orders_commute",
    "preference",
    "quadratic",
    "random_instance",
    "random_instance_arrays",
    "re_distance",
    "ridge_stage",
    "save_instance",
    "stage_loss",
    "stages",
    "theorem_3_1",
    "train_stages",
    "train_stages_gd",
    "validate_instance",
    "weakly_local",
]
