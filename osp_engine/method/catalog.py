"""The names a config may use, without importing torch: validation answers a bad setting in well under a second.

The registries that build things (`models.MODELS`, `data.DATASETS`) are keyed by exactly these names;
tests/test_catalog.py checks both, and that TORCHVISION_CLASSIFIERS is what the installed torchvision lists
(`torchvision.models.list_models(module=torchvision.models)`), so an upgrade that adds a model fails a test
instead of hiding the model.
"""
from __future__ import annotations

OWN_MODELS = ("resnet20", "resnet32", "resnet56", "resnet110", "vgg16", "vgg19", "mobilenetv2", "digits-resnet14",
              "digits-resnet8")

TORCHVISION_CLASSIFIERS = (
    "alexnet", "convnext_base", "convnext_large", "convnext_small", "convnext_tiny", "densenet121",
    "densenet161", "densenet169", "densenet201", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2",
    "efficientnet_b3", "efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
    "efficientnet_v2_l", "efficientnet_v2_m", "efficientnet_v2_s", "googlenet", "inception_v3", "maxvit_t",
    "mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3", "mobilenet_v2", "mobilenet_v3_large",
    "mobilenet_v3_small", "regnet_x_16gf", "regnet_x_1_6gf", "regnet_x_32gf", "regnet_x_3_2gf",
    "regnet_x_400mf", "regnet_x_800mf", "regnet_x_8gf", "regnet_y_128gf", "regnet_y_16gf", "regnet_y_1_6gf",
    "regnet_y_32gf", "regnet_y_3_2gf", "regnet_y_400mf", "regnet_y_800mf", "regnet_y_8gf", "resnet101",
    "resnet152", "resnet18", "resnet34", "resnet50", "resnext101_32x8d", "resnext101_64x4d",
    "resnext50_32x4d", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5",
    "shufflenet_v2_x2_0", "squeezenet1_0", "squeezenet1_1", "swin_b", "swin_s", "swin_t", "swin_v2_b",
    "swin_v2_s", "swin_v2_t", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19",
    "vgg19_bn", "vit_b_16", "vit_b_32", "vit_h_14", "vit_l_16", "vit_l_32", "wide_resnet101_2",
    "wide_resnet50_2",
)

MODEL_NAMES = OWN_MODELS + tuple(f"tv-{arch}" for arch in TORCHVISION_CLASSIFIERS)

# timm's model modules (`timm.models._registry`) whose classifiers are convolutional: `timm-<name>` for every
# model of these. The others are transformers, hybrids with attention or state-space layers, or MLPs;
# tests/test_catalog.py checks that every module timm lists is in exactly one of the two.
TIMM_CNN_FAMILIES = (
    "byobnet", "convmixer", "convnext", "cspnet", "cspnext", "densenet", "dla", "dpn", "efficientnet", "fasternet",
    "ghostnet", "hardcorenas", "hgnet", "hrnet", "inception_next", "inception_resnet_v2", "inception_v3",
    "inception_v4", "lcnetv2", "mambaout", "mobilenetv3", "nasnet", "nfnet", "pnasnet", "rdnet", "regnet",
    "repghost", "repvit", "res2net", "resnest", "resnet", "resnetv2", "rexnet", "selecsls", "senet", "sknet",
    "starnet", "tresnet", "vgg", "vovnet", "xception", "xception_aligned",
)
TIMM_OTHER_FAMILIES = (
    "beit", "byoanet", "cait", "coat", "convit", "cpubone", "crossvit", "csatv2", "davit", "deepseek_vit", "deit",
    "edgenext", "efficientformer", "efficientformer_v2", "efficientvim", "efficientvit_mit", "efficientvit_msra",
    "eva", "fastvit", "focalnet", "gcvit", "gemma4_vit", "hiera", "hieradet_sam2", "iformer", "levit", "lowformer",
    "maxxvit", "metaformer", "mlp_mixer", "mobilenetv5", "mobilevit", "mvitv2", "naflexvit", "nest", "nextvit",
    "pit", "pvt_v2", "qwen3_vit", "sequencer", "shvit", "swiftformer", "swin_transformer", "swin_transformer_v2",
    "swin_transformer_v2_cr", "tiny_vit", "tnt", "twins", "visformer", "vision_transformer",
    "vision_transformer_hybrid", "vision_transformer_relpos", "vision_transformer_sam", "vitamin", "volo", "xcit",
)
TIMM_PREFIX = "timm-"

DATASET_NAMES = ("digits", "digits-noisy", "cifar10", "cifar100", "imagenet", "folder", "synthetic-cifar10")

ONE_CHANNEL_DATASETS = ("digits", "digits-noisy")      # every torchvision classifier's first layer takes 3 channels
