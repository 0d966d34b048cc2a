"""Adversarial attacks on [0, 1] image batches; each returns an :class:`~robex.attacks.base.AttackResult`.

Import from the defining modules (no eager imports here, so ``--help`` stays fast):
single classifiers: ``fgsm.FGSM``, ``pgd.PGD``, ``deepfool.DeepFool``, ``lbfgs.LBFGS``,
``lrp_attack.LRPAttack``; multi-label: ``multilabel.MultiLabelPGD``; coarse-to-fine classifiers
(Heidarizadeh et al.): ``c2f.LRPC``, ``c2f.LRPF``, ``c2f.PGDC``, ``c2f.PGDF``, ``c2f.DFC``, ``c2f.DFF``,
built by name with ``c2f.make_c2f_attack``; their evaluation: ``evaluation``, ``tables``, ``figures``.
"""
