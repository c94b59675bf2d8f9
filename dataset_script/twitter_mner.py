"""Twitter-2015 / Twitter-2017 multimodal NER corpora, or your own corpus in their format, as a `datasets` dataset.

The corpora ship in the layout every multimodal NER repository uses::

    <data_dir>/{train,valid,test}.txt   an ``IMGID:<id>`` line, ``token<TAB>tag`` lines, a blank line between tweets
    <image_dir>/<id>.jpg

`datasets` 4+ runs no loading scripts, so this script writes a Hub-ready Parquet folder that
``datasets.load_dataset(folder)`` loads, and caches the model's image features (VGG-16 pool5, ResNet-152 layer4 or
CLIP ViT-B/32 patch tokens) as a dataset column so that training never runs the image backbone.

Export the corpus (``--push_to_hub`` is the only step that needs the network)::

    python dataset_script/twitter_mner.py --data_dir D [--image_dir I] --output_dir O --corpus twitter-2015 \
        [--label_map OTHER=MISC] [--push_to_hub REPO]

Cache the image features of an exported dataset::

    python dataset_script/twitter_mner.py cache-features --dataset O --model M --output_dir F

The same command is installed as `acn-dataset`. In Python: `acn_mner.corpus.load_twitter_mner`,
`acn_mner.parquet_export.export_parquet` and `acn_mner.feature_cache.save_feature_cache`.
"""

from acn_mner.dataset_command import cli

if __name__ == "__main__":
    cli()
