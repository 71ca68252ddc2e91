"""Multinomial logistic regression, fitted by Newton's method in NumPy."""

import numpy as np

from keras_sdn._checks import check_number


class LogisticRegression:
    """L2-regularised multinomial logistic regression (scikit-learn's defaults).

    Minimises `C * sum_i -log p(y_i | x_i) + ||W||^2 / 2` over the weights
    `W` and an unpenalised intercept, as scikit-learn's `LogisticRegression()`
    does, with damped Newton steps and a backtracking line search: the
    problems here are small (features: latent dimensions; classes: factors),
    so the exact Hessian is cheap and the fit converges in a few steps.

    Args:
        C: inverse regularisation strength, > 0.
        max_iterations: the most Newton steps.
        tolerance: stop when the largest gradient entry, per example, is below this.

    Example:

    >>> classifier = LogisticRegression().fit(features, labels)
    >>> accuracy = np.mean(classifier.predict(features) == labels)
    """

    def __init__(self, C=1.0, max_iterations=100, tolerance=1e-8):
        self.C = check_number("C", C, low=0, low_open=True)
        self.max_iterations = max_iterations
        self.tolerance = tolerance
        self.classes_ = None
        self.coefficients_ = None  # (num_features + 1, num_classes), intercept last

    @staticmethod
    def _with_intercept(features):
        features = np.asarray(features, np.float64)
        if features.ndim != 2:
            raise ValueError(
                f"Expected `features` of shape (n, d). Received: features.shape={features.shape}"
            )
        return np.concatenate([features, np.ones((len(features), 1))], axis=1)

    def _objective(self, inputs, one_hot, coefficients, penalty):
        logits = inputs @ coefficients
        log_norm = np.logaddexp.reduce(logits, axis=1)
        data_term = self.C * np.sum(log_norm - np.sum(logits * one_hot, axis=1))
        return data_term + 0.5 * np.sum(penalty * coefficients**2), logits, log_norm

    def fit(self, features, labels):
        inputs = self._with_intercept(features)
        self.classes_, label_index = np.unique(np.asarray(labels), return_inverse=True)
        if len(inputs) != len(label_index):
            raise ValueError(
                "Expected `features` and `labels` of the same length. Received: "
                f"len(features)={len(inputs)}, len(labels)={len(label_index)}"
            )
        num_inputs, num_classes = inputs.shape[1], len(self.classes_)
        one_hot = np.eye(num_classes)[label_index]
        penalty = np.ones((num_inputs, 1))
        penalty[-1] = 0.0  # the intercept is not regularised
        coefficients = np.zeros((num_inputs, num_classes))
        loss, logits, log_norm = self._objective(inputs, one_hot, coefficients, penalty)
        for _ in range(self.max_iterations):
            probs = np.exp(logits - log_norm[:, None])
            gradient = self.C * inputs.T @ (probs - one_hot) + penalty * coefficients
            if np.max(np.abs(gradient)) < self.tolerance * len(inputs):
                break
            step = self._newton_step(inputs, probs, gradient, penalty)
            scale = 1.0
            while scale > 1e-10:
                candidate = coefficients - scale * step
                candidate_state = self._objective(inputs, one_hot, candidate, penalty)
                if candidate_state[0] <= loss - 1e-4 * scale * np.sum(gradient * step):
                    break
                scale *= 0.5
            else:
                break  # no decrease along the Newton direction: converged numerically
            coefficients = candidate
            loss, logits, log_norm = candidate_state
        self.coefficients_ = coefficients
        return self

    def _newton_step(self, inputs, probs, gradient, penalty):
        num_inputs, num_classes = gradient.shape
        hessian = np.empty((num_classes, num_inputs, num_classes, num_inputs))
        for a in range(num_classes):
            for b in range(a, num_classes):
                weights = probs[:, a] * ((a == b) - probs[:, b])
                block = self.C * inputs.T @ (inputs * weights[:, None])
                hessian[a, :, b, :] = block
                hessian[b, :, a, :] = block.T
        size = num_classes * num_inputs
        hessian = hessian.reshape(size, size) + np.diag(np.tile(penalty[:, 0], num_classes))
        # Softmax logits are shift invariant (and the intercept unpenalised), so
        # the Hessian is singular along that direction: damp it slightly.
        hessian += np.eye(size) * 1e-9 * max(np.trace(hessian) / size, 1e-12)
        step = np.linalg.solve(hessian, gradient.T.reshape(-1))
        return step.reshape(num_classes, num_inputs).T

    def predict_proba(self, features):
        if self.coefficients_ is None:
            raise ValueError("Expected a fitted classifier: call `fit` before predicting.")
        logits = self._with_intercept(features) @ self.coefficients_
        logits -= np.max(logits, axis=1, keepdims=True)
        probs = np.exp(logits)
        return probs / np.sum(probs, axis=1, keepdims=True)

    def predict(self, features):
        return self.classes_[np.argmax(self.predict_proba(features), axis=1)]
