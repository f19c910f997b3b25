import torch
import convgemm.nn

torch.manual_seed(0)
model = torch.nn.Sequential(convgemm.nn.Conv2d(3, 16, 3, padding="same"), torch.nn.ReLU(),
                            convgemm.nn.Conv2d(16, 8, 3, stride=2, groups=2))  # drop-in torch.nn.Conv2d layers
x = torch.randn(4, 3, 32, 32, requires_grad=True)  # contiguous float32 on the CPU: handed over by pointer
model(x).square().mean().backward()  # dx, dW, db: convgemm's backward passes, only those autograd needs
stock = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding="same"), torch.nn.ReLU(),
                            torch.nn.Conv2d(16, 8, 3, stride=2, groups=2))
stock.load_state_dict(model.state_dict())  # same parameters, same state_dict keys
print(torch.allclose(model(x), stock(x), atol=1e-5), tuple(model(x).shape))  # True (4, 8, 15, 15)
