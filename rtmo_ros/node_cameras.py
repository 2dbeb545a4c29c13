"""The cameras of the pose node: one :class:`CameraStream` per entry of ``cameras``.

With ``cameras`` empty the node serves one camera on its own topics (``image`` -> ``poses``,
``markers``, ``image_annotated``, ``detections``). With ``cameras: [cam0, cam1]`` every name
is a prefix: ``cam0/image`` (``cam0/image/compressed``), ``cam0/camera_info`` and
``cam0/depth`` in, ``cam0/poses`` ... out, relative to the node's namespace and so remappable
in launch. Each camera keeps what belongs to it: its subscriptions (:class:`Inputs`, with QoS
and depth pairing), its publishers, its tracker and filters (``PersonPipeline``), and its
frame counts and stage times, which ``/diagnostics`` reports per camera. The engine is shared:
the worker runs the newest frame of every camera in one call.
"""
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from visualization_msgs.msg import MarkerArray

from rtmo_msgs.msg import PersonArray
from rtmo_ros import conversions
from rtmo_ros.diagnostics import PipelineStats
from rtmo_ros.node_inputs import Inputs
from rtmo_ros.perception import PersonPipeline

OUTPUT = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)  # matches every reader


class CameraStream:
    """One camera of ``node``: publishers from configure, subscriptions while active."""

    def __init__(self, node, name='', stats=None):
        self.node, self.name = node, name
        self.prefix = f'{name}/' if name else ''
        self.stats = stats if stats is not None else PipelineStats()
        self.pubs = {}
        self.pipeline = None
        self.inputs = Inputs(node, self.on_image, self.prefix, self.stats)

    def configure(self, perception):
        """Create the lifecycle publishers and a fresh tracker / filter state."""
        make = self.node.create_lifecycle_publisher
        self.pubs = {'poses': make(PersonArray, self.prefix + 'poses', OUTPUT),
                     'markers': make(MarkerArray, self.prefix + 'markers', OUTPUT),
                     'image_annotated': make(Image, self.prefix + 'image_annotated', OUTPUT)}
        if conversions.detections_available():
            self.pubs['detections'] = make(conversions.Detection2DArray,
                                           self.prefix + 'detections', OUTPUT)
        self.pipeline = PersonPipeline(perception)

    def open(self):
        """Subscribe (activate); return the topics listened on, for the log."""
        self.inputs = Inputs(self.node, self.on_image, self.prefix, self.stats)
        return self.inputs.open()

    def close(self):
        """Unsubscribe (deactivate)."""
        self.inputs.close()

    def destroy_publishers(self):
        for pub in self.pubs.values():
            self.node.destroy_lifecycle_publisher(pub)
        self.pubs = {}

    def on_image(self, msg):
        """Subscription callback: hand the frame to the node's worker, never block."""
        self.node.hand_over(self, msg)

    def label(self):
        """How diagnostics and logs name this camera ('' for the single unnamed one)."""
        return f' {self.name}' if self.name else ''


def make_streams(node, names, old=None):
    """{name: CameraStream} for ``names`` (the ``cameras`` parameter); [] -> one unnamed.
    A camera also in ``old`` (the previous configure's) keeps its frame totals."""
    old = old or {}
    return {name: CameraStream(node, name, old[name].stats if name in old else None)
            for name in (names or [''])}
