"""``torch.optim`` for cnnir: the optimizers and ``lr_scheduler`` (docs/semantics.md §4–§5).

    from cnnir import optim
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = optim.lr_scheduler.StepLR(opt, step_size=10)
"""

from cnnir.optim import lr_scheduler
from cnnir.optim.optimizer import (
    SGD,
    Adadelta,
    Adagrad,
    Adam,
    AdamW,
    Optimizer,
    RMSprop,
    l1_penalty,
    regularized,
)

__all__ = ["SGD", "Adadelta", "Adagrad", "Adam", "AdamW", "Optimizer", "RMSprop",
           "l1_penalty", "lr_scheduler", "regularized"]

