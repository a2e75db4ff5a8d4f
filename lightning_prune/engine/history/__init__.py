"""What was pruned, as plain data: records of each prune, saving and reloading pruned models, optimizer state.

``records`` defines the record format (tensor slices and changed attributes, primitives
only) and the recorder that layer pruners report every slice to; ``serialization``
replays records and saves or loads pruned state dicts; ``optim_state`` slices optimizer
state with the same records, so training resumes after a prune.
"""
