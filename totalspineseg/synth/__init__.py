"""Synthetic spines with exact ground truth, for tests, the demo model and evaluation (tooling, not inference).

phantom   the entry points: PhantomSpec, make_phantom, make_localizer, write_phantom, write_bids_dataset
shapes    spine coordinates (centreline and rigid frames) and the shape primitives, with their tissues
anatomy   one seeded person's spine: vertebrae, discs, atlas, sacrum, canal and cord as shapes to paint
grid      fields of view and voxel grids: orientation codes, anisotropic voxels, oblique tilt
render    an anatomy on a grid: exact labels and a T1w- or T2w-like image with bias field and noise
bids      a raw BIDS dataset of phantoms, with the ground truth under derivatives/labels
"""
