"""timm's AsymmetricLossMultiLabel as the ASL reference runs it: (4, 0, 0.05),
focusing weights without gradient, summed over batch and classes. Newer
timm defaults to `reduction='batchmean'` and takes the keyword; older timm
has no keyword and always sums.
"""

from timm.loss import AsymmetricLossMultiLabel


def reference_asl(eps=1e-8):
    settings = dict(gamma_neg=4, gamma_pos=0, clip=0.05, eps=eps, disable_torch_grad_focal_loss=True)
    try:
        return AsymmetricLossMultiLabel(reduction="sum", **settings)
    except TypeError:
        return AsymmetricLossMultiLabel(**settings)
