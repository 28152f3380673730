package kubecluster

import (
	"context"
	"fmt"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// CreateCRD installs crd and returns once the apiserver serves its
// resource (the Established condition), or ctx ends.
func (c *Cluster) CreateCRD(ctx context.Context, crd *apiextensionsv1.CustomResourceDefinition) error {
	s := runtime.NewScheme()
	if err := apiextensionsv1.AddToScheme(s); err != nil {
		return err
	}
	cl, err := client.New(c.Config, client.Options{Scheme: s})
	if err != nil {
		return err
	}
	if err := cl.Create(ctx, crd); err != nil {
		return fmt.Errorf("install CRD %s: %w", crd.Name, err)
	}
	for {
		if err := cl.Get(ctx, client.ObjectKeyFromObject(crd), crd); err == nil {
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("CRD %s not established: %w", crd.Name, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
