"""xfd-synth: a built-in synthetic aerial-ground video person ReID dataset in the DetReIDX layout.

No real dataset can be downloaded where xfd is developed, so the demo and the tests run on this one. It models
what makes extreme far-distance ReID hard: identity lives in body shape, gait and weak skin/hair cues while
clothing changes between the two capture sessions; drones see people from 18 capture points (5.8-120 m,
pitch 30/60/90°) as small, foreshortened, blurred, noisy crops; ground cameras see large sharp side or frontal
views; frames carry bursts of degradations (motion blur, occluders, low resolution, heavy JPEG, slipped boxes)
with a per-frame quality ground truth.

Modules, in the order data flows:
- `identity`  who a person is (body, gait, look) and what they wear per session;
- `plan`      identities, sessions, splits and every tracklet's camera and length (`SynthConfig`, `build_plan`);
- `naming`    DetReIDX folder and frame names (`TrackletSpec`);
- `figure`    the walking, dressed person as 3D solids at a gait phase;
- `render`    orthographic projection and PIL drawing of the solids;
- `camera`    per-tracklet view: pitch, azimuth, size law, crop box, imaging conditions, crop motion;
- `scene`     background canvases (ground backdrop, aerial ground) with metric clutter;
- `degrade`   per-frame degradation bursts, their image operations and quality factors;
- `tracklet`  renders one tracklet to JPEG files and returns its ground truth;
- `dataset`   worker pool, atomic publication, `synth_truth.json`, summary (`generate`).
"""

from .dataset import TRUTH_FILE, OutputExistsError, Summary, generate
from .plan import SynthConfig, build_plan

__all__ = ["TRUTH_FILE", "OutputExistsError", "Summary", "SynthConfig", "build_plan", "generate"]
