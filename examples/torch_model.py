"""Step a PyTorch model's parameters in place with fastopt.

On the CPU, ``tensor.detach().numpy()`` is a zero-copy view of a tensor; on a GPU
(``--cuda``, needs ``fastopt[cuda12]`` or ``[cuda13]``), ``tensor.detach()`` is passed as
is and the step runs as one CUDA kernel over all the parameters, on torch's current
stream. Either way fastopt updates the model's own memory: torch computes the gradients,
fastopt takes the step.

    pip install torch==2.13.0 && python examples/torch_model.py
    python examples/torch_model.py --cuda      # a CUDA build of torch and a GPU
"""

import sys

import torch

import fastopt
from fastopt.datasets import load_digits

cuda = "--cuda" in sys.argv[1:]
device = "cuda" if cuda else "cpu"
torch.manual_seed(0)
images, labels = load_digits()
x = torch.from_numpy(images.reshape(len(images), -1)).to(device)
y = torch.from_numpy(labels).to(device)

model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
model = model.to(device)


def view(t: torch.Tensor):
    """The tensor's memory as fastopt takes it: no copy on either device."""
    return t.detach() if cuda else t.detach().numpy()


params = [view(p) for p in model.parameters()]
opt = fastopt.Adam(params, lr=1e-2, clip_norm=5.0)

for _ in range(150):
    model.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step([view(p.grad) for p in model.parameters()])

with torch.no_grad():
    accuracy = (model(x).argmax(dim=1) == y).float().mean().item()
first = model[0].weight
assert (params[0].data_ptr() if cuda else params[0].ctypes.data) == first.data_ptr()
print(f"{device}: loss {loss.item():.4f}  training accuracy {accuracy:.3f}")
