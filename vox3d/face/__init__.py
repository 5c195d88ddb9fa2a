"""Face geometry and images of faces: the linear face models (ICT-FaceKit, BFM), ARE vertex
pairs, FaceBoxes, the 120x120 crop policy, the MobileNet regressor, the Sim3DR renderer,
mesh files, landmarks and the face-shape metrics. (docs/architecture.md: the face room.)"""
