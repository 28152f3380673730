// Package deploy holds banger's deployment manifests, embedded so that
// banger cluster install applies the very files kubectl apply -k
// deploy/kubernetes does.
package deploy

import "embed"

// Kubernetes is deploy/kubernetes: kustomization.yaml and the manifests it
// lists, under kubernetes/.
//
//go:embed kubernetes/*.yaml
var Kubernetes embed.FS
