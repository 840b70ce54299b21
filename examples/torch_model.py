"""Step a PyTorch CPU model's parameters in place with fastopt.

``tensor.detach().numpy()`` is a zero-copy view of a CPU tensor, so fastopt updates the
model's own memory: torch computes the gradients, fastopt takes the step.

    pip install torch==2.13.0 && python examples/torch_model.py
"""

import numpy as np
import torch

import fastopt
from fastopt.datasets import load_digits

torch.manual_seed(0)
images, labels = load_digits()
x = torch.from_numpy(images.reshape(len(images), -1))
y = torch.from_numpy(labels)

model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
params = [p.detach().numpy() for p in model.parameters()]  # views, not copies
opt = fastopt.Adam(params, lr=1e-2)

for _ in range(150):
    model.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step([p.grad.numpy() for p in model.parameters()])

with torch.no_grad():
    accuracy = (model(x).argmax(dim=1) == y).float().mean().item()
assert np.shares_memory(params[0], model[0].weight.detach().numpy())
print(f"loss {loss.item():.4f}  training accuracy {accuracy:.3f}")
