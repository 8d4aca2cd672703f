"""`boxseg label` without torch: the label file's fields and resumable partial results (`boxseg.label.store`),
the review page and `--apply-review` (`boxseg.label.review`). The labelling itself runs a checkpoint and lives in
`boxseg.train.label`."""
