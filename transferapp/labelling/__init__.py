"""The unlabelled pile (#24): the Inbox, its "label these next" order, labelling, and the map.

Inbox images are Image rows with no label (Image.inbox); labelling one gives it a class, and from
then on every other room sees it as any labelled image (Image.objects)."""
