"""voxelfm.data: the synthetic phantom cohort (:mod:`voxelfm.data.phantom`) and patient-level
splits (:func:`voxelfm.data.splits.patient_level_split`)."""
