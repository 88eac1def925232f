"""Transferability estimators: how well one layer's frozen features suit a target task,
scored before any transfer is trained.

Each function takes a layer's features of the target training images, `x` (N, D), and
their labels `y` (N,) int (0..C-1), as torch tensors on any device (the GPU when the
caller has one), and returns one float: higher means "predicted to transfer better".
Everything is computed in float64 from the papers' definitions:

- `knn_loo_accuracy`: leave-one-out k-nearest-neighbour accuracy on L2-normalised features.
- `logme`: You et al. 2021, "LogME: Practical Assessment of Pre-trained Models for Transfer
  Learning" (ICML): per class, the log marginal likelihood of a Bayesian linear regression
  from the features to the one-hot label column, alpha and beta by the evidence fixed point;
  the mean over classes, divided by N.
- `hscore`: Bao et al. 2019, "An Information-Theoretic Approach to Transferability in Task
  Transfer Learning" (ICIP): tr(cov(f)^-1 cov(E[f | y])), with the covariance shrunk towards
  a scaled identity by the Ledoit-Wolf amount, as Ibrahim et al. 2022 ("Newer is not always
  better: Rethinking transferability metrics, their peculiarities, stability and
  performance", ECML-PKDD) do, so it stays defined when features outnumber images.
- `transrate`: Huang et al. 2022, "Frustratingly Easy Transferability Estimation" (ICML):
  coding rate of all features minus the class-weighted coding rates of each class's.
- `gbc`: Pandy et al. 2022, "Transferability Estimation using Bhattacharyya Class
  Separability" (CVPR): minus the summed Bhattacharyya coefficients between per-class
  diagonal Gaussians (after a PCA to at most `dims` components, as the paper does).
- `nce` / `leep`: Tran et al. 2019, "Transferability and Hardness of Supervised
  Classification Tasks" (ICCV) and Nguyen et al. 2020, "LEEP: A New Measure to Evaluate
  Transferability of Learned Representations" (ICML). They read the source network's
  predictions over its own classes, so they score the whole network, not a layer.
- `sfda`: Shao et al. 2022, "Not All Models Are Equal: Predicting Model Transferability in
  a Self-challenging Fisher Space" (ECCV): the mean log-likelihood of the labels under a
  Bayes classifier in a regularised Fisher space, after ConfMix moves each image towards
  the other classes by how unsure a first pass is about it (`sfda` says where it departs).

The linear-probe accuracy is the heads' own cross-validated logistic regression
(`transferlab.heads.fit`), called in `linear_probe_cv_accuracy`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

LAYER_ESTIMATORS = ("knn", "logme", "hscore", "transrate", "gbc", "sfda", "linear_probe")


def _prepare(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    # Memory: this is a float64 copy of one draw's (n x D) features, and the estimators
    # add centred / normalised copies of the same size and Gram matrices of the smaller
    # side (`_spectrum`). Float64 because the spectra decide which directions count, and
    # a Gram matrix holds its eigenvalues only to eps x the largest. The stage bounds the
    # cost: the features are pooled to features.max_dim at extraction, one layer is held
    # at a time, and `budget.transferability_peak` counts these copies (5 x 8 bytes per
    # element) against features.memory_gb before any work.
    x = x.reshape(len(x), -1).to(torch.float64)
    y = y.to(device=x.device, dtype=torch.int64)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} feature rows but {len(y)} labels")
    classes = int(y.max()) + 1 if len(y) else 0
    return x, y, classes


def _one_hot(y: torch.Tensor, classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(y, classes).to(torch.float64)


# ---------------------------------------------------------------------------- k-NN


def knn_loo_accuracy(x: torch.Tensor, y: torch.Tensor, neighbours: int) -> float:
    """Share of images whose `neighbours` nearest other images (cosine similarity of the
    L2-normalised features) vote for their own class; a tied vote goes to the class of the
    nearest neighbour among the tied ones."""
    x, y, classes = _prepare(x, y)
    if len(x) < 2:
        return float("nan")
    z = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    sim = z @ z.T
    sim.fill_diagonal_(-math.inf)  # leave the image itself out
    k = min(neighbours, len(x) - 1)
    top_sim, top = sim.topk(k, dim=1)
    votes = _one_hot(y[top], classes)  # (N, k, C)
    # A tie breaker smaller than one vote: later neighbours weigh slightly less.
    rank_weight = 1.0 + 1e-3 * torch.linspace(1, 0, k, dtype=torch.float64, device=x.device)
    tally = (votes * rank_weight[None, :, None]).sum(1)
    return float((tally.argmax(1) == y).double().mean())


# ---------------------------------------------------------------------------- LogME


def _spectrum(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, s): left singular vectors and singular values of f (N, D), nonzero ones only,
    largest first.

    From the eigendecomposition of the smaller Gram matrix (f f^T, or f^T f and then
    U = f V / s), not an SVD of f: at 5,000 x 9,216 that is 3.5 + 15 s on two cores
    against the SVD's 95 s. A Gram matrix holds its eigenvalues s^2 to about eps x the
    largest, so directions with s^2 below max(N, D) eps s_max^2 are dropped as zero: a
    direction that weak is one no estimator here can tell from the null space (LogME's
    evidence and SFDA's regularised scatter treat them alike)."""
    n, d = f.shape
    gram = f @ f.T if n <= d else f.T @ f
    evals, evecs = torch.linalg.eigh(gram)
    evals, evecs = evals.flip(0), evecs.flip(1)
    largest = evals[0].clamp_min(1e-300) if len(evals) else 0.0
    keep = evals > largest * max(n, d) * torch.finfo(f.dtype).eps
    s = evals[keep].sqrt()
    u = evecs[:, keep] if n <= d else (f @ evecs[:, keep]) / s
    return u, s


def logme_evidence(f: torch.Tensor, t: torch.Tensor, alpha: float, beta: float) -> float:
    """log p(t | f, alpha, beta) of the Bayesian linear model t = f w + noise,
    w ~ N(0, alpha^-1 I), noise ~ N(0, beta^-1 I) (You et al. 2021, eq. 2), in closed form
    through the singular values of f."""
    f = f.to(torch.float64)
    t = t.to(torch.float64).reshape(-1, 1)
    n, d = f.shape
    u, s = _spectrum(f)
    a = torch.tensor([alpha], dtype=torch.float64, device=f.device)
    b = torch.tensor([beta], dtype=torch.float64, device=f.device)
    return float(_evidences(u, s, t, n, d, a, b)[0])


_BOUNDS = (1e-8, 1e8)  # alpha and beta stay inside these during the fixed point


def _fixed_point(s: torch.Tensor, z: torch.Tensor, outside: torch.Tensor, n: int,
                 iterations: int, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha, beta (one per column of z, all columns at once) at You et al. 2021's fixed
    point: gamma = sum beta sigma_i / (alpha + beta sigma_i), alpha = gamma / m^T m,
    beta = (N - gamma) / ||f m - t||^2, from alpha = beta = 1."""
    sigma = (s * s)[:, None]
    alpha = torch.ones(z.shape[1], dtype=z.dtype, device=z.device)
    beta = torch.ones_like(alpha)
    for _ in range(iterations):
        denom = alpha + beta * sigma
        gamma = (beta * sigma / denom).sum(0)
        m_sq = ((beta * s[:, None] * z / denom) ** 2).sum(0)
        residual = ((alpha * z / denom) ** 2).sum(0) + outside
        # Bounded: a column the features cannot explain sends alpha to infinity (w = 0),
        # one they fit exactly sends beta there; the evidence is flat out there.
        new_alpha = (gamma / m_sq.clamp_min(1e-300)).clamp(*_BOUNDS)
        new_beta = ((n - gamma) / residual.clamp_min(1e-300)).clamp(*_BOUNDS)
        done = bool(((new_alpha - alpha).abs() <= tol * alpha).all()
                    and ((new_beta - beta).abs() <= tol * beta).all())
        alpha, beta = new_alpha, new_beta
        if done:
            break
    return alpha, beta


def _evidences(u, s, t, n, d, alpha, beta) -> torch.Tensor:
    """`_evidence` for every column of t (N, C), alpha and beta (C,)."""
    sigma = (s * s)[:, None]
    z = u.T @ t
    outside = (t * t).sum(0) - (z * z).sum(0)
    denom = alpha + beta * sigma
    m_sq = ((beta * s[:, None] * z / denom) ** 2).sum(0)
    residual = ((alpha * z / denom) ** 2).sum(0) + outside
    logdet_a = torch.log(denom).sum(0) + (d - len(s)) * torch.log(alpha)
    return (n / 2 * torch.log(beta) + d / 2 * torch.log(alpha) - n / 2 * math.log(2 * math.pi)
            - beta / 2 * residual - alpha / 2 * m_sq - logdet_a / 2)


def logme_fit(f: torch.Tensor, t: torch.Tensor, *, iterations: int = 100, tol: float = 1e-6
              ) -> tuple[float, float, float]:
    """(evidence, alpha, beta) of one target column t at the evidence fixed point."""
    f = f.to(torch.float64)
    t = t.to(torch.float64).reshape(-1, 1)
    n, d = f.shape
    u, s = _spectrum(f)
    z = u.T @ t
    alpha, beta = _fixed_point(s, z, (t * t).sum(0) - (z * z).sum(0), n, iterations, tol)
    return float(_evidences(u, s, t, n, d, alpha, beta)[0]), float(alpha[0]), float(beta[0])


def logme(x: torch.Tensor, y: torch.Tensor, *, iterations: int = 100, tol: float = 1e-6
          ) -> float:
    """LogME: the maximised evidence per image, averaged over the one-hot label columns
    (one SVD of the features serves every column)."""
    x, y, classes = _prepare(x, y)
    n, d = x.shape
    t = _one_hot(y, classes)
    u, s = _spectrum(x)
    z = u.T @ t
    alpha, beta = _fixed_point(s, z, (t * t).sum(0) - (z * z).sum(0), n, iterations, tol)
    return float(_evidences(u, s, t, n, d, alpha, beta).mean() / n)


# ---------------------------------------------------------------------------- H-score


def ledoit_wolf_shrinkage(xc: torch.Tensor, gram: torch.Tensor | None = None) -> float:
    """Ledoit-Wolf (2004) weight lambda of mu I in (1 - lambda) S + lambda mu I, for centred
    rows xc (N, D), S = xc^T xc / N, mu = tr(S) / D; computed through the N x N Gram
    matrix xc xc^T (`gram`, where the caller has it), so it costs nothing extra when D is
    large."""
    n, d = xc.shape
    gram = xc @ xc.T if gram is None else gram
    sq_norms = gram.diagonal()
    mu = float(sq_norms.sum()) / (n * d)
    s_fro2 = float((gram * gram).sum()) / n**2  # ||S||_F^2
    delta2 = s_fro2 - 2 * mu * float(sq_norms.sum()) / n + d * mu**2  # ||S - mu I||_F^2
    # ||x x^T - S||_F^2 = ||x||^4 - 2 x^T S x + ||S||_F^2, with x^T S x = sum_j (x.x_j)^2 / N
    per_row = sq_norms**2 - 2 * (gram * gram).sum(1) / n + s_fro2
    beta2 = float(per_row.sum()) / n**2
    if delta2 <= 0:
        return 1.0
    return min(beta2, delta2) / delta2


def hscore(x: torch.Tensor, y: torch.Tensor) -> float:
    """tr(Sigma^-1 Sigma_between) with Sigma the Ledoit-Wolf shrunk feature covariance and
    Sigma_between the covariance of the class-conditional means."""
    x, y, classes = _prepare(x, y)
    n, d = x.shape
    xc = x - x.mean(0)
    # The N x N Gram matrix serves the shrinkage and, when D > N, the Woodbury solve
    # (at 5,000 x 9,216 it is 3.5 s on two cores: computed once).
    gram = xc @ xc.T if d > n else None
    lam = ledoit_wolf_shrinkage(xc, gram)
    mu = float((xc * xc).sum()) / (n * d)
    if mu == 0:
        return 0.0
    onehot = _one_hot(y, classes)
    counts = onehot.sum(0)
    present = counts > 0
    means = (onehot.T @ xc)[present] / counts[present, None]  # centred class means
    weighted = means * (counts[present] / n).sqrt()[:, None]  # rows sqrt(p_c) (mu_c - mu)
    a, b = 1.0 - lam, max(lam * mu, 1e-12 * mu)
    if d <= n:
        cov = a * (xc.T @ xc) / n + b * torch.eye(d, dtype=x.dtype, device=x.device)
        return float((weighted * torch.linalg.solve(cov, weighted.T).T).sum())
    # Woodbury: (a/N X^T X + b I)^-1 = (I - X^T (X X^T + N b / a I)^-1 X) / b
    inner = gram + (n * b / max(a, 1e-300)) * torch.eye(n, dtype=x.dtype, device=x.device)
    proj = weighted @ xc.T  # (C, N)
    correction = (proj * torch.linalg.solve(inner, proj.T).T).sum()
    return float(((weighted * weighted).sum() - correction) / b)


# ---------------------------------------------------------------------------- TransRate


def _coding_rate(z: torch.Tensor, eps2: float, d: int) -> torch.Tensor:
    """1/2 logdet(I_D + D / (n eps^2) z^T z), through the smaller of the two Gram matrices."""
    n = len(z)
    small = z @ z.T if n <= z.shape[1] else z.T @ z
    eye = torch.eye(len(small), dtype=z.dtype, device=z.device)
    return 0.5 * torch.logdet(eye + (d / (n * eps2)) * small)


def transrate(x: torch.Tensor, y: torch.Tensor, eps2: float) -> float:
    """R(Z, eps) - sum_c (N_c / N) R(Z_c, eps) of the L2-normalised, centred features Z."""
    x, y, classes = _prepare(x, y)
    z = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    z = z - z.mean(0)
    d = z.shape[1]
    whole = _coding_rate(z, eps2, d)
    within = sum((int((y == c).sum()) / len(z)) * _coding_rate(z[y == c], eps2, d)
                 for c in range(classes) if int((y == c).sum()) > 0)
    return float(whole - within)


# ---------------------------------------------------------------------------- GBC


def gbc(x: torch.Tensor, y: torch.Tensor, dims: int, span: torch.Tensor | None = None
        ) -> float:
    """- sum over ordered class pairs of the Bhattacharyya coefficient exp(-D_B) of their
    diagonal Gaussians, in the first `dims` principal components of the features.

    A class's per-component variance gets a floor of 1e-6 of the mean variance, so a class
    with one image is a narrow Gaussian, not a division by zero. `span`:
    `span_coordinates(x)` where the caller has it (SFDA needs the same)."""
    x, y, classes = _prepare(x, y)
    span = span_coordinates(x) if span is None else span
    p = span[:, :dims]  # the leading principal components' scores
    if p.shape[1] == 0:
        return 0.0
    floor = 1e-6 * float(p.var(0, unbiased=False).mean())
    means, variances = [], []
    for c in range(classes):
        pc = p[y == c]
        means.append(pc.mean(0))
        variances.append(pc.var(0, unbiased=False) + floor)
    total = 0.0
    for i in range(classes):
        for j in range(classes):
            if i == j:
                continue
            var = (variances[i] + variances[j]) / 2
            diff = means[i] - means[j]
            distance = (diff * diff / var).sum() / 8 + 0.5 * (
                torch.log(var) - 0.5 * torch.log(variances[i]) - 0.5 * torch.log(variances[j])
            ).sum()
            total += float(torch.exp(-distance))
    return -total


# ---------------------------------------------------------------------------- SFDA

_SFDA_FLOOR = 1e-10  # smallest shrinkage (the authors' release keeps lambda above it)


def span_coordinates(x: torch.Tensor) -> torch.Tensor:
    """Coordinates (N, r) of the centred rows in an orthonormal basis of their span, the
    principal axes, largest variance first. The scatter matrices, the Fisher directions
    with a nonzero eigenvalue and every image lie in that span (shrinkage towards a
    multiple of I leaves the complement alone), so SFDA is exact there and costs N x N,
    not D x D, when the features outnumber the images. In float64, as `_prepare` gives."""
    x = x.reshape(len(x), -1).to(torch.float64)
    u, s = _spectrum(x - x.mean(0))
    return u * s


def fisher_scatter(z: torch.Tensor, y: torch.Tensor, classes: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(S_W, class means, priors) of rows z with labels 0..classes-1, all present:
    S_W = sum_c p_c cov_c (biased). (S_B = sum_c p_c (m_c - m)(m_c - m)^T is used through
    its factor, in `fisher_bayes`.)"""
    onehot = _one_hot(y, classes)
    counts = onehot.sum(0)
    priors = counts / len(z)
    means = (onehot.T @ z) / counts[:, None]
    within = z - means[y]
    s_w = within.T @ within / len(z)
    return s_w, means, priors


def sfda_shrinkage(s_w: torch.Tensor, rate: float) -> float:
    """SFDA's adaptive regularisation lambda = exp(-rate * largest eigenvalue of S_W): a
    within-class scatter with little spread is shrunk most (floored at 1e-10 as in the
    authors' release)."""
    largest = float(torch.linalg.eigvalsh(s_w)[-1]) if len(s_w) else 0.0
    return max(math.exp(-rate * largest), _SFDA_FLOOR)


def _solve_spd(a: torch.Tensor, b: torch.Tensor, *, floor: float) -> torch.Tensor:
    """a^-1 b for symmetric a whose eigenvalues are at least `floor` in exact arithmetic:
    by Cholesky; where rounding has pushed an eigenvalue below zero (a floor far below
    eps x the largest), through the eigendecomposition with the eigenvalues clamped back
    to the floor."""
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) == 0:
        return torch.cholesky_solve(b, chol)
    evals, evecs = torch.linalg.eigh((a + a.T) / 2)
    return evecs @ ((evecs.T @ b) / evals.clamp_min(floor)[:, None])


def fisher_bayes(z: torch.Tensor, y: torch.Tensor, classes: int, shrinkage: float,
                 full_dims: int, scatter: tuple | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(c | z_i) (N, C), projection U (r, d)) of the Bayes classifier in the Fisher
    space of rows z (span coordinates of `full_dims`-dimensional features).

    Regularised within-class scatter S~_W = (1 - lambda) S_W + lambda mu I, mu = tr(S_W) /
    full_dims; U: the top d = min(C - 1, r) solutions of S_B u = e S~_W u, scaled so that
    U^T S~_W U = I; in the projected space a class is a Gaussian with identity covariance:
    delta_c(t) = t . m~_c - |m~_c|^2 / 2 + log p_c, and p(c | z) = softmax_c delta_c.
    `scatter`: `fisher_scatter(z, y, classes)` where the caller has it already."""
    s_w, means, priors = scatter if scatter is not None else fisher_scatter(z, y, classes)
    mu = float(s_w.diagonal().sum()) / full_dims
    if mu <= 0:
        raise ValueError("no within-class spread (one image per class): S~_W is zero")
    eye = torch.eye(len(s_w), dtype=z.dtype, device=z.device)
    reg = (1.0 - shrinkage) * s_w + shrinkage * mu * eye
    # S_B = B^T B with B's rows sqrt(p_c) (m_c - m), so it has rank C - 1 and the nonzero
    # solutions come from a C x C problem: with R = S~_W^-1 B^T and M = B R, M v = e v
    # gives u = R v / sqrt(e), for which S_B u = e S~_W u and u^T S~_W u = 1. One
    # Cholesky factor of S~_W in place of two r x r eigendecompositions (5,000 images:
    # about 1 s against 30). A null direction of S_B (e = 0) moves every class mean alike,
    # so leaving it out changes no class probability.
    b_rows = (means - priors @ means) * priors.sqrt()[:, None]
    r = _solve_spd(reg, b_rows.T, floor=shrinkage * mu)
    m = b_rows @ r
    evals, evecs = torch.linalg.eigh((m + m.T) / 2)
    order = torch.argsort(evals, descending=True)[:min(classes - 1, len(s_w))]
    order = order[evals[order] > evals.max().clamp_min(1e-300) * 1e-12]
    proj = (r @ evecs[:, order]) / evals[order].sqrt()
    t, mt = z @ proj, means @ proj
    delta = t @ mt.T - 0.5 * (mt * mt).sum(1) + torch.log(priors)
    return torch.log_softmax(delta, dim=1), proj


def sfda(x: torch.Tensor, y: torch.Tensor, rate: float, span: torch.Tensor | None = None
         ) -> float:
    """SFDA: (1/N) sum_i log p(y_i | x'_i) in the Fisher space of the ConfMix'd features x'.

    1. Fisher space of x with the adaptive lambda (`sfda_shrinkage`, its `rate` is the
       paper's a) and the Bayes classifier there (`fisher_bayes`): p_i = p(y_i | x_i).
    2. Self-challenging (ConfMix): x'_i = q_i x_i + (1 - q_i) mu_-y_i, with mu_-c the mean
       of the other classes' means and q_i the softened confidence (a softmax over image i's
       class probabilities, as the authors' release does): unsure images move furthest
       towards the other classes, so the score rewards layers that keep hard images apart.
    3. The Fisher space and classifier again on x', with the same lambda.

    Departures: the largest eigenvalue of S_W is exact (the release estimates it with three
    power iterations); the score is the mean log-likelihood as the paper writes it (the
    release averages p(y_i | x'_i) without the log); everything runs in the span of the
    centred images (`span_coordinates`), which is exact. NaN when no class has two
    distinct images (S_W = 0: nothing to regularise towards). `span`:
    `span_coordinates(x)` where the caller has it (GBC needs the same)."""
    x, y, _ = _prepare(x, y)
    present, y = torch.unique(y, return_inverse=True)
    classes = len(present)
    if classes < 2:
        return float("nan")
    z = span_coordinates(x) if span is None else span
    scatter = fisher_scatter(z, y, classes)
    s_w, means, _ = scatter
    if float(s_w.diagonal().sum()) <= 0:
        return float("nan")
    lam = sfda_shrinkage(s_w, rate)
    log_p, _ = fisher_bayes(z, y, classes, lam, x.shape[1], scatter)
    soft = torch.softmax(log_p.exp(), dim=1)
    confidence = soft[torch.arange(len(y), device=y.device), y][:, None]
    outer = (means.sum(0, keepdim=True) - means) / (classes - 1)
    mixed = confidence * z + (1 - confidence) * outer[y]
    scatter = fisher_scatter(mixed, y, classes)
    if float(scatter[0].diagonal().sum()) <= 0:
        return float("nan")
    log_p, _ = fisher_bayes(mixed, y, classes, lam, x.shape[1], scatter)
    return float(log_p[torch.arange(len(y), device=y.device), y].mean())


# ---------------------------------------------------------------------------- NCE, LEEP


def _joint(source_probs: torch.Tensor, y: torch.Tensor, classes: int) -> torch.Tensor:
    """Empirical joint P(y, z) (C_target, C_source) from soft source predictions."""
    return _one_hot(y, classes).T @ source_probs / len(y)


def leep(source_probs: torch.Tensor, y: torch.Tensor) -> float:
    """(1/N) sum_i log sum_z P(y_i | z) theta(x_i)_z, P(y | z) from the soft joint."""
    probs = source_probs.to(torch.float64)
    y = y.to(device=probs.device, dtype=torch.int64)
    joint = _joint(probs, y, int(y.max()) + 1)
    conditional = joint / joint.sum(0, keepdim=True).clamp_min(1e-300)  # P(y | z)
    eep = (probs * conditional[y]).sum(1)
    return float(torch.log(eep.clamp_min(1e-300)).mean())


def nce(source_probs: torch.Tensor, y: torch.Tensor) -> float:
    """-H(Y | Z) with Z the source network's hard prediction (its argmax)."""
    probs = source_probs.to(torch.float64)
    y = y.to(device=probs.device, dtype=torch.int64)
    hard = _one_hot(probs.argmax(1), probs.shape[1])
    joint = _joint(hard, y, int(y.max()) + 1)
    pz = joint.sum(0, keepdim=True)
    mask = joint > 0
    return float((joint[mask] * torch.log(joint[mask] / pz.expand_as(joint)[mask])).sum())


# ---------------------------------------------------------------------------- linear probe


def linear_probe_cv_accuracy(x: np.ndarray, y: np.ndarray, heads_cfg, seed: int) -> float:
    """The logistic-regression head's best mean CV accuracy over heads.logreg.C, on the
    heads' transform of the features (`heads_fitting.choose_c`, as the heads stage fits it);
    NaN when the smallest class is too small for two folds."""
    from transferlab.heads.fit import choose_c, logreg_model, transform_features

    xt = transform_features(np.asarray(x, np.float64), heads_cfg.transform, heads_cfg.power)
    _, info = choose_c(logreg_model, heads_cfg.logreg.C, xt, np.asarray(y), heads_cfg.cv_folds,
                       seed)
    if not info["cv_folds"]:
        return float("nan")
    return max(info["cv_score"].values())
