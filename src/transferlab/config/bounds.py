"""The upper bound of every count, size and rate in the params, and why.

A value above its bound is refused before any work, naming the key, the value
and what is allowed (transferlab.config.spec.fail), so an extra zero or a
`dvc exp run -S recipe.yaml:pretrain.epochs=1e20` cannot start a run that never
finishes, or one that fails only in a later stage. The bounds are generous:
each sits far above the largest value of any preset (noted as "presets: ...")
and above what the papers' own recipes or a real study at ImageNet scale use,
so nothing a study could run is refused. Lower bounds stay beside each field in
params.py and models/__init__.py. tests/test_params.py holds every Int and Float
of the schema to having an upper bound, so a new field without one fails there.
"""

# --- training length
EPOCHS = 10_000  # passes over the data; presets: 200 (Borthakur & Einhorn's DenseNet-BC);
#                  ImageNet recipes run 90 to 600
STEPS = 100_000_000  # optimiser steps (and milestones counted in steps); 10,000 epochs of an
#                      ImageNet-size set (1.28 M images) at batch 256 is 5e7; presets: 19,600
TSNE_ITERATIONS = 100_000  # presets: 500; scikit-learn's default is 1,000

# --- sizes of data
BATCH = 65_536  # images per batch; the largest ImageNet batches published are 64k; presets: 256
IMAGES_PER_CLASS = 1_000_000  # training or probe images per class (subsample and the like);
#                               ImageNet has about 1,300 a class, Places365 up to 40,000;
#                               presets: 1,000
CLASS_INDEX = 1_000_000  # a class index; ImageNet-21k has 21,841 classes
PIXELS = 1_024  # crop size, as data.image_size and features.input_size: images are square

# --- rates
LR = 10.0  # learning rates; 0.1 is SGD's usual largest start, Adam's is 1e-3; presets: 0.1
RATE_MULT = 10.0  # a layer's multiplier of the rate (transfer.layer_lr_mult); presets: 0.1
WEIGHT_DECAY = 1.0  # presets: 5e-4; at 1 the weights are pulled to zero faster than they learn
PENALTY = 100.0  # transfer.l2sp.alpha and .beta; values reported for L2-SP lie in 1e-4 .. 1;
#                  at 100 the penalty outweighs any task loss
GAMMA = 10.0  # loss weight gamma^i of iteration i (feedback nets); Spero: 1.2
COST = 1e6  # the C of the SVM and logistic-regression heads; presets: 100

# --- network shapes (models/__init__.py)
LAYERS = 1_000  # a count of transferable layers (freeze, sweep.layers, report.layer); a
#                 DenseNet-BC or WRN of depth 1,000 has about 500; the arch's own count is
#                 checked across keys
DEPTH = 1_000  # DenseNet-BC / WRN depth (6 k + 4); the papers' deepest: 250 (DenseNet-BC)
CHANNELS = 4_096  # channels of a conv layer; AlexNet's widest has 384, ResNets' 2,048
UNITS = 16_384  # units of a fully connected layer (or a decoder's hidden layer); AlexNet: 4,096
GROWTH = 256  # DenseNet growth rate; the paper uses 12 to 48
WIDEN = 64  # WRN widening factor; the paper goes to 20
GROUPS = 64  # AlexNet's grouped convolutions; Caffe's reference model uses 2
ITERATIONS = 64  # the feedback net's unrolled iterations; Spero: 4

# --- heads, probes, estimators
FOLDS = 100  # cross-validation folds; presets: 5
TREES = 10_000  # random-forest trees; presets: 128
DRAWS = 1_000  # low-shot draws per shot count; presets: 3
THREADS = 1_024  # CPU threads
PERPLEXITY = 1_000.0  # t-SNE perplexity (must stay below the points probed); presets: 20
INIT_STD = 10.0  # inversion's initial noise; images are normalised to about [-1, 1]
NEIGHBOURS = 10_000  # k of the kNN estimator; presets: 3
FEATURE_DIMS = 65_536  # GBC's PCA components (at most the feature's dimensions); presets: 32
STORED_DIMS = 16_777_216  # features.max_dim: dims of one stored feature row; presets: 9,216
#                          (the default); VGG's flattened conv1_1 at 224 px has 3.2 M
MEMORY_GB = 1_048_576.0  # features.memory_gb: a budget of 1 PiB; presets: none set
TRANSRATE_EPS2 = 100.0  # TransRate's distortion eps^2; presets: 1e-4
SFDA_SHRINKAGE = 1_000.0  # SFDA's a in exp(-a max eig); presets: 5
BOOTSTRAP = 1_000_000  # resamples of the report's interval; presets: 2,000
TOLERANCE = 1.0  # report.tolerance: scores (accuracy, mAP) lie in [0, 1]
