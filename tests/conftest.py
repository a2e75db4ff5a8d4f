import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
# One intra-op thread. Almost every test runs small models (8x8 digits, 32-64 px images), on
# which a second thread costs more in hand-offs than it saves; on a busy 2-core machine two
# threads made such tests 5-10x slower (training the digits model for 3 epochs: 4.8 s of
# wall time on one thread, 51-54 s on two, measured with other jobs running). Tests that
# need another count set it themselves and put it back.
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def prune_zoo():
    """benchmarks/prune_zoo.py, loaded as a module (the zoo tests call its main())."""
    from helpers import load_prune_zoo_script

    return load_prune_zoo_script()
