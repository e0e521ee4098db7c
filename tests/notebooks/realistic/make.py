"""Regenerate the realistic notebooks: `python tests/notebooks/realistic/make.py`.

Written for this project (see README.md here): each is a short analysis of the kind tutorial
galleries and textbooks hold, using only data that ships with a package (scikit-learn's
bundled datasets, generated data), never downloading anything. As the issue 16 trial did with
a public gallery, each section (a markdown heading) is one step, tagged `step:<section>` on
its first code cell, with no `prev:` tags: the DAG is whatever the data flow gives. Imports
are where authors put them, often inside later sections.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent

#: name -> (title, [(section heading, [code cell, ...]), ...])
NOTEBOOKS: dict[str, tuple[str, list[tuple[str, list[str]]]]] = {
    "iris_logistic": (
        "Classifying irises with logistic regression",
        [
            (
                "Setup",
                [
                    "import numpy as np\nimport matplotlib.pyplot as plt\n"
                    "from sklearn.datasets import load_iris",
                ],
            ),
            (
                "Load the data",
                [
                    "iris = load_iris(as_frame=True)\nX, y = iris.data, iris.target\n"
                    "print(X.shape, list(iris.target_names))",
                    "X.describe().round(2)",
                ],
            ),
            (
                "Split and fit",
                [
                    "from sklearn.model_selection import train_test_split\n"
                    "from sklearn.linear_model import LogisticRegression\n"
                    "X_train, X_test, y_train, y_test = train_test_split(\n"
                    "    X, y, test_size=0.3, random_state=0, stratify=y\n)\n"
                    "clf = LogisticRegression(max_iter=500)\nclf.fit(X_train, y_train)",
                ],
            ),
            (
                "Evaluate",
                [
                    "from sklearn.metrics import accuracy_score, confusion_matrix\n"
                    "pred = clf.predict(X_test)\n"
                    "print(f'accuracy: {accuracy_score(y_test, pred):.3f}')\n"
                    "confusion_matrix(y_test, pred)",
                ],
            ),
            (
                "Look at two features",
                [
                    "fig, ax = plt.subplots(figsize=(4, 3), dpi=60)\n"
                    "ax.scatter(X['petal length (cm)'], X['petal width (cm)'], c=y, s=8)\n"
                    "ax.set_xlabel('petal length')\nax.set_ylabel('petal width')\nplt.show()",
                ],
            ),
        ],
    ),
    "diabetes_lasso_criteria": (
        "Choosing the Lasso's alpha on the diabetes data with AIC and BIC",
        [
            (
                "Data",
                [
                    "from sklearn.datasets import load_diabetes\n"
                    "X, y = load_diabetes(return_X_y=True, as_frame=True)\nX.head()",
                ],
            ),
            (
                "Fit with each criterion",
                [
                    "from sklearn.linear_model import LassoLarsIC\n"
                    "from sklearn.pipeline import make_pipeline\n"
                    "from sklearn.preprocessing import StandardScaler\n"
                    "aic = make_pipeline(StandardScaler(), LassoLarsIC(criterion='aic')).fit(X, y)\n"
                    "raw = LassoLarsIC(criterion='bic').fit(X, y)",
                ],
            ),
            (
                "Compare",
                [
                    "import pandas as pd\n"
                    "results = pd.DataFrame({\n"
                    "    'aic': aic[-1].coef_, 'bic (unscaled)': raw.coef_\n"
                    "}, index=X.columns)\n"
                    "print(repr(float(aic[-1].alpha_)), repr(float(raw.alpha_)))\nresults",
                ],
            ),
        ],
    ),
    "digits_pca_kmeans": (
        "Digits: principal components and clusters",
        [
            (
                "Load digits",
                [
                    "import numpy as np\nfrom sklearn.datasets import load_digits\n"
                    "digits = load_digits()\ndata = digits.data[:600]\nlabels = digits.target[:600]",
                ],
            ),
            (
                "Principal components",
                [
                    "from sklearn.decomposition import PCA\n"
                    "pca = PCA(n_components=10, random_state=0).fit(data)\n"
                    "reduced = pca.transform(data)\n"
                    "print(np.round(pca.explained_variance_ratio_[:5], 4))",
                ],
            ),
            (
                "Clustering",
                [
                    "from sklearn.cluster import KMeans\n"
                    "km = KMeans(n_clusters=10, n_init=3, random_state=0).fit(reduced)\n"
                    "print(round(km.inertia_, 2))",
                ],
            ),
            (
                "How pure are the clusters?",
                [
                    "from sklearn.metrics import adjusted_rand_score\n"
                    "print(round(adjusted_rand_score(labels, km.labels_), 4))\n"
                    "np.bincount(km.labels_)",
                ],
            ),
        ],
    ),
    "wine_grid_search": (
        "Tuning an SVM on the wine data",
        [
            (
                "Data",
                ["from sklearn.datasets import load_wine\nX, y = load_wine(return_X_y=True)"],
            ),
            (
                "A pipeline and a grid",
                [
                    "from sklearn.pipeline import Pipeline\n"
                    "from sklearn.preprocessing import StandardScaler\nfrom sklearn.svm import SVC\n"
                    "pipe = Pipeline([('scale', StandardScaler()), ('svc', SVC())])\n"
                    "grid = {'svc__C': [0.1, 1, 10], 'svc__gamma': ['scale', 0.01]}",
                ],
            ),
            (
                "Search",
                [
                    "from sklearn.model_selection import GridSearchCV\n"
                    "search = GridSearchCV(pipe, grid, cv=3).fit(X, y)\n"
                    "print(search.best_params_, round(search.best_score_, 4))",
                ],
            ),
            (
                "All results",
                [
                    "import pandas as pd\n"
                    "table = pd.DataFrame(search.cv_results_).drop(\n"
                    "    columns=['mean_fit_time', 'std_fit_time', 'mean_score_time', "
                    "'std_score_time']\n)\ntable",
                ],
            ),
        ],
    ),
    "breast_cancer_trees": (
        "Trees and forests on the breast cancer data",
        [
            (
                "Data",
                [
                    "from sklearn.datasets import load_breast_cancer\n"
                    "cancer = load_breast_cancer(as_frame=True)\ndf = cancer.frame\n"
                    "df['target'].value_counts()",
                ],
            ),
            (
                "Features and target",
                [
                    "X = df.drop(columns='target')\ny = df['target']\n"
                    "from sklearn.model_selection import train_test_split\n"
                    "X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=42)",
                ],
            ),
            (
                "A single tree",
                [
                    "from sklearn.tree import DecisionTreeClassifier\n"
                    "tree = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X_train, y_train)\n"
                    "print('tree:', round(tree.score(X_test, y_test), 4))",
                ],
            ),
            (
                "A forest",
                [
                    "from sklearn.ensemble import RandomForestClassifier\n"
                    "forest = RandomForestClassifier(n_estimators=25, random_state=0)\n"
                    "forest.fit(X_train, y_train)\n"
                    "print('forest:', round(forest.score(X_test, y_test), 4))",
                ],
            ),
            (
                "Which features matter",
                [
                    "import pandas as pd\n"
                    "importance = pd.Series(forest.feature_importances_, index=X.columns)\n"
                    "importance.sort_values(ascending=False).head(8).round(4)",
                ],
            ),
        ],
    ),
    "ridge_coefficients": (
        "Ridge coefficients as the penalty grows",
        [
            (
                "Synthetic data",
                [
                    "import numpy as np\nimport matplotlib.pyplot as plt\n"
                    "from sklearn.datasets import make_regression\n"
                    "X, y, true_coef = make_regression(\n"
                    "    n_samples=80, n_features=6, coef=True, noise=5.0, random_state=1\n)",
                ],
            ),
            (
                "The path",
                [
                    "from sklearn.linear_model import Ridge\n"
                    "alphas = np.logspace(-2, 4, 30)\ncoefs = []\nfor a in alphas:\n"
                    "    coefs.append(Ridge(alpha=a).fit(X, y).coef_)\ncoefs = np.array(coefs)",
                ],
            ),
            (
                "Plot",
                [
                    "fig, ax = plt.subplots(figsize=(4, 3), dpi=60)\nax.plot(alphas, coefs)\n"
                    "ax.set_xscale('log')\nax.set_title('Ridge coefficients')\nplt.show()",
                ],
            ),
            (
                "Compare with the truth",
                ["print(np.round(true_coef, 2))\nprint(np.round(coefs[0], 2))"],
            ),
        ],
    ),
    "sales_pandas": (
        "Exploring a sales table with pandas",
        [
            (
                "Make the data",
                [
                    "import numpy as np\nimport pandas as pd\nrng = np.random.default_rng(7)\n"
                    "sales = pd.DataFrame({\n"
                    "    'day': pd.date_range('2024-01-01', periods=120, freq='D'),\n"
                    "    'store': rng.choice(['north', 'south', 'east'], 120),\n"
                    "    'units': rng.integers(0, 50, 120),\n"
                    "    'price': rng.uniform(2, 9, 120).round(2),\n})",
                ],
            ),
            (
                "Clean",
                [
                    "sales.loc[sales['units'] == 0, 'units'] = np.nan\n"
                    "sales.dropna(inplace=True)\nsales['revenue'] = sales['units'] * sales['price']\n"
                    "print(len(sales))",
                ],
            ),
            (
                "By store",
                [
                    "by_store = sales.groupby('store')['revenue'].agg(['count', 'sum', 'mean'])"
                    ".round(2)\nby_store",
                ],
            ),
            (
                "By month",
                [
                    "monthly = sales.set_index('day').resample('MS')['revenue'].sum().round(2)\n"
                    "monthly",
                ],
            ),
            (
                "A wide pivot",
                [
                    "sales['week'] = sales['day'].dt.isocalendar().week\n"
                    "pivot = sales.pivot_table(index='store', columns='week', values='units', "
                    "aggfunc='sum')\npivot",
                ],
            ),
        ],
    ),
    "rbm_features": (
        "Restricted Boltzmann machine features for a linear classifier",
        [
            (
                "Data",
                [
                    "import numpy as np\nfrom sklearn.datasets import load_digits\n"
                    "X, y = load_digits(return_X_y=True)\nX = X[:400] / 16.0\ny = y[:400]",
                ],
            ),
            (
                "Models",
                [
                    "from sklearn.linear_model import LogisticRegression\n"
                    "from sklearn.neural_network import BernoulliRBM\n"
                    "from sklearn.pipeline import Pipeline\n"
                    "logistic = LogisticRegression(max_iter=500)\n"
                    "rbm = BernoulliRBM(random_state=0, verbose=False)\n"
                    "rbm_features_classifier = Pipeline(steps=[('rbm', rbm), ('logistic', logistic)])",
                ],
            ),
            (
                "Hyper-parameters",
                [
                    "rbm.learning_rate = 0.06\nrbm.n_iter = 5\nrbm.n_components = 32\n"
                    "logistic.C = 100.0",
                ],
            ),
            (
                "Training",
                [
                    "rbm_features_classifier.fit(X, y)\n"
                    "print(rbm.components_.shape, round(rbm_features_classifier.score(X, y), 4))",
                ],
            ),
        ],
    ),
    "text_naive_bayes": (
        "A tiny text classifier",
        [
            (
                "A corpus",
                [
                    "docs = [\n    'the match ended in a draw', 'a late goal won the match',\n"
                    "    'the team lost the final', 'rates rose at the central bank',\n"
                    "    'the bank cut interest rates', 'markets fell as rates rose',\n]\n"
                    "topics = ['sport', 'sport', 'sport', 'finance', 'finance', 'finance']",
                ],
            ),
            (
                "Features",
                [
                    "from sklearn.feature_extraction.text import TfidfVectorizer\n"
                    "vectorizer = TfidfVectorizer()\nfeatures = vectorizer.fit_transform(docs)\n"
                    "print(features.shape)",
                ],
            ),
            (
                "Fit",
                [
                    "from sklearn.naive_bayes import MultinomialNB\n"
                    "nb = MultinomialNB().fit(features, topics)\n"
                    "print(nb.predict(vectorizer.transform(['goal in the final', 'bank rates'])))",
                ],
            ),
            (
                "Most telling words",
                [
                    "import numpy as np\nwords = np.array(vectorizer.get_feature_names_out())\n"
                    "for i, topic in enumerate(nb.classes_):\n"
                    "    top = np.argsort(nb.feature_log_prob_[i])[-3:]\n"
                    "    print(topic, sorted(words[top]))",
                ],
            ),
        ],
    ),
    "cross_validation_seeded": (
        "Cross-validation with a globally seeded generator",
        [
            (
                "Seed and data",
                [
                    "import numpy as np\nnp.random.seed(0)\n"
                    "from sklearn.datasets import make_classification\n"
                    "X, y = make_classification(n_samples=200, n_features=8, random_state=0)",
                ],
            ),
            (
                "Folds",
                [
                    "from sklearn.model_selection import KFold, cross_val_score\n"
                    "from sklearn.ensemble import RandomForestClassifier\n"
                    "scores = cross_val_score(RandomForestClassifier(n_estimators=10), X, y, "
                    "cv=KFold(5, shuffle=True))\nprint(np.round(scores, 4))",
                ],
            ),
            (
                "Again",
                [
                    "scores2 = cross_val_score(RandomForestClassifier(n_estimators=10), X, y, "
                    "cv=KFold(5, shuffle=True))\nprint(np.round(scores2, 4))",
                ],
            ),
        ],
    ),
    "scratch_cleanup": (
        "Working with scratch variables, then cleaning up",
        [
            (
                "Load",
                [
                    "from sklearn.datasets import load_iris\nimport pandas as pd\n"
                    "frame = load_iris(as_frame=True).frame\ntmp = frame.copy()\n"
                    "tmp['ratio'] = tmp['sepal length (cm)'] / tmp['sepal width (cm)']\n"
                    "summary = tmp.groupby('target')['ratio'].mean().round(3)",
                ],
            ),
            ("Tidy up", ["del tmp\nsummary"]),
            (
                "Report",
                [
                    "try:\n    tmp\n    print('scratch frame still here')\n"
                    "except NameError:\n    print('scratch frame gone')\n"
                    "if 'summary' in globals():\n    print(summary.to_dict())",
                ],
            ),
        ],
    ),
}


def _slug(heading: str) -> str:
    words = re.findall(r"[a-z0-9]+", heading.lower())
    return "-".join(words)[:40] or "section"


def build(name: str) -> nbformat.NotebookNode:
    title, sections = NOTEBOOKS[name]
    nb = new_notebook()
    cells = [new_markdown_cell(f"# {title}")]
    for heading, codes in sections:
        cells.append(new_markdown_cell(f"## {heading}"))
        for i, source in enumerate(codes):
            cell = new_code_cell(source)
            if i == 0:
                cell.metadata["tags"] = [f"step:{_slug(heading)}"]
            cells.append(cell)
    for i, cell in enumerate(cells):
        cell.id = f"{name.replace('_', '-')}-{i}"
    nb.cells = cells
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.validate(nb)
    return nb


def main() -> None:
    for stale in HERE.glob("*.ipynb"):
        if stale.stem not in NOTEBOOKS:
            stale.unlink()
    for name in NOTEBOOKS:
        nbformat.write(build(name), HERE / f"{name}.ipynb")


if __name__ == "__main__":
    main()
