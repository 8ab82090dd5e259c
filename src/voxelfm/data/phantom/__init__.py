"""Synthetic chest-CT cohort with ground truth for all seven task categories.

In memory::

    from voxelfm.data.phantom import generate_scan, generate_cohort
    scan = generate_scan(0, seed=0, size="tiny")     # PhantomScan(volume, labels, row, report)
    cohort = generate_cohort(20, seed=0, size="small")
    # findings at the severe end of their clinical ranges, ~30 % prevalence each (small studies):
    cohort = generate_cohort(200, config=phantom_config("enriched", conspicuity=1.0))
    cohort.table()                                    # the labels.csv rows as a DataFrame

On disk (``voxelfm phantom OUT --n N``)::

    from voxelfm.data.phantom import write_cohort
    write_cohort("cohort", n=200, seed=0, format="nifti", size="small")
    verify_cohort("cohort", n_scans=200)              # [] or one line per problem
    reader = CohortReader("cohort")                   # .ct(id), .label_map(id), .findings(id), .ids("test")

Names other modules rely on: :data:`FINDINGS`, :data:`SEGMENTATION_LABELS`,
:data:`REGRESSION_TARGETS` (:data:`TARGET_NAMES`), :data:`PATIENT_CLASSES`, :data:`LOCALISATION_COLUMNS`, :data:`SIZES`.
The generative model is described in ``dataset.md`` (written with every cohort) and in the
docstrings of the submodules: ``patient`` (findings and co-occurrence), ``anatomy``, ``render``,
``acquisition`` (scanner model), ``survival`` (hazard model), ``reports``.
"""

from voxelfm.data.phantom.cohort import (
    Cohort,
    PhantomScan,
    ScanPlan,
    generate_cohort,
    generate_scan,
    plan_cohort,
)
from voxelfm.data.phantom.constants import (
    FINDINGS,
    HU,
    LABEL_IDS,
    LOCALISATION_COLUMNS,
    PATIENT_CLASSES,
    REGRESSION_TARGETS,
    SEGMENTATION_LABELS,
    SIZES,
    TARGET_NAMES,
)
from voxelfm.data.phantom.patient import PREVALENCES, FindingModel, PrevalenceConfig, phantom_config

__all__ = [
    "FINDINGS",
    "HU",
    "LABEL_IDS",
    "LOCALISATION_COLUMNS",
    "PATIENT_CLASSES",
    "PREVALENCES",
    "REGRESSION_TARGETS",
    "SEGMENTATION_LABELS",
    "SIZES",
    "TARGET_NAMES",
    "Cohort",
    "CohortReader",
    "FindingModel",
    "PhantomScan",
    "PrevalenceConfig",
    "ScanPlan",
    "generate_cohort",
    "generate_scan",
    "phantom_config",
    "plan_cohort",
    "verify_cohort",
    "write_cohort",
]


def __getattr__(name: str):
    # write_cohort imports the io writers (SimpleITK, pydicom): load it only when asked for.
    if name == "write_cohort":
        from voxelfm.data.phantom.writer import write_cohort

        return write_cohort
    if name == "CohortReader":
        from voxelfm.data.phantom.reader import CohortReader

        return CohortReader
    if name == "verify_cohort":
        from voxelfm.data.phantom.verify import verify_cohort

        return verify_cohort
    raise AttributeError(name)
