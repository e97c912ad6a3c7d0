import jaxdyn
for fam in ["adagrad", "rmsprop"]:
    cfg = {"study": {"name": "f", "seeds": 2}, "model": {"hidden": [8]}, "optim": {"name": fam},
           "train": {"steps": 20, "batch_size": 8, "chunk_steps": 10, "log_every": 5}}
    import shutil; shutil.rmtree(f"/tmp/review/runs/{fam}", ignore_errors=True)
    r = jaxdyn.run(cfg, out=f"/tmp/review/runs/{fam}", progress=False)
    print(fam, r.members.final_test_accuracy.tolist(), r.members.diverged_at.tolist())
